"""The campaign engine: from recipient rows to sent messages, their ledger, their receipt and their delivery.

* :mod:`.recipients`: rows from a source, rendered, checked, normalized and deduplicated into messages.
* :mod:`.dispatch`: messages sent in batches at the gateway's limit, with bounded concurrency.
* :mod:`.marking`: batches built and marked in the ledger just ahead of the wire, within the crash bound.
* :mod:`.isolation`: a refused batch taken apart, so that one refused number never sinks a campaign.
* :mod:`.ledger` and :mod:`.stores`: the resume ledger of what a task instance sent, and where it lives.
* :mod:`.resume`: what a retry leaves out, given what an earlier try sent.
* :mod:`.receipt`: the send receipt, built in one place.
* :mod:`.tracking`: the delivery states of a receipt's messages, and the polling that updates them.

The hooks expose the sending (``P2PSmsHook.send_messages``), the operator and the sensor add the workflow.
"""
