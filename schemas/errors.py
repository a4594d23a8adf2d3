"""The error tree: one root, a shallow hierarchy, context as attributes."""

from __future__ import annotations


class MigrationError(Exception):
    """Root of every error circuit-migrate raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class Transient:
    """Mixin: the operation may succeed when retried (connection lost, deadlock, ...)."""


class ConfigurationError(MigrationError):
    """Bad options or settings (a malformed URL, a missing required value)."""

    exit_code = 2


class ConnectionFailed(MigrationError, Transient):
    """A database could not be reached."""

    exit_code = 3


class SourceSchemaMismatch(MigrationError):
    """The legacy schema is missing, or differs from DESIGN.md section 3."""

    exit_code = 4


class TargetSchemaMissing(MigrationError):
    """The target lacks what it needs (the auth schema, the target tables, the ledger)."""

    exit_code = 4


class TargetSchemaConflict(MigrationError):
    """Tables circuit-migrate did not create hold target names: it refuses to adopt them."""

    exit_code = 4


class LoadError(MigrationError):
    """Writing a batch to the target failed for a reason a retry cannot mend."""


class BatchReadMismatch(MigrationError):
    """A batch read other rows than the plan counted for its users in the run's snapshot."""

    def __init__(self, batch_no: int, wrong: dict[str, tuple[int, int]]) -> None:
        self.batch_no = batch_no
        self.wrong = wrong
        listed = ", ".join(f"{t} {got:,} of {want:,}" for t, (want, got) in sorted(wrong.items()))
        super().__init__(
            f"batch {batch_no} read other rows than planned ({listed}): not loaded",
            batch_no=batch_no,
        )


class TransientLoadError(LoadError, Transient):
    """Writing a batch failed for a reason a retry may mend (serialization, deadlock)."""


class ReconciliationMismatch(MigrationError):
    """The accounting identity or the independent verification did not hold."""

    exit_code = 5


class RowsRejected(MigrationError):
    """The target database rejected rows of a run (quarantined ``database_rejected``)."""

    exit_code = 8


class RunInProgress(MigrationError):
    """Another run holds the target's advisory lock: this run was refused (and recorded)."""

    exit_code = 6


class CleanupRefused(MigrationError):
    """Cleanup refused: the latest run did not finish cleanly, or verification fails now."""

    exit_code = 7


class AuthUsersMissing(MigrationError):
    """The target's auth.users lacks users the legacy data needs (two projects, not copied)."""

    exit_code = 4


class AuthUsersConflict(MigrationError):
    """A target auth user clashes with the source's (same id, other row; or same email, other
    id): ``copy-auth-users`` copied nothing."""

    exit_code = 4


class MissingPrivilege(MigrationError):
    """The connecting role lacks a privilege the command needs (named in the message)."""

    exit_code = 4


class Interrupted(MigrationError):
    """SIGINT or SIGTERM stopped the run; exit 128 + the signal's number (130, 143)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message, signum=signum)
        self.signum = signum
        self.exit_code = 128 + signum


class RunLockLost(MigrationError):
    """The run's lock connection ended mid-run: the run commits no further batch."""
