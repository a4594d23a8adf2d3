"""``verify``: the independent check of the target against the source (DESIGN.md section 8).

``values`` reads legacy values in SQL, ``common`` holds scopes and hashes, ``source`` derives
what the target must hold, ``target`` reads what it holds and the ledger's current decisions,
``runner`` connects and compares (with ``reports.verification``). Nothing here imports
``transforms``.
"""

from flows.verify.runner import verify

__all__ = ["verify"]
