"""The codes the ledger records, with one line each on what they mean (constants only).

``migration.quarantine.reason``, ``migration.repairs.kind`` and ``migration.links.method`` hold
these codes; the reports explain them from here. Other tools read the codes: add new ones,
never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping

QUARANTINE_REASONS: Mapping[str, str] = {
    "no_user": "the row has no user_id, and no related row names one (a session without a "
    "user, or a tagged model whose session has none)",
    "unknown_user": "its user_id is not in auth.users",
    "invalid_parameters": "a circuit parameter (Rsh, Ra, Ca, Rb, Cb) is missing, unreadable, "
    "not a number, zero, negative or not finite; the detail names each one",
    "invalid_frequency_range": "the frequency range is unusable: min and max must be finite "
    "and 0 < min < max",
    "malformed_saved_profiles": "the session's saved_profiles is not a JSON array (counted as "
    "one saved_profiles item)",
    "malformed_element": "a saved_profiles element is not a JSON object, or has no parameters "
    "object",
    "validation_failed": "the transformed row broke a rule of the target schema (Pandera), or "
    "its session did, or no configuration could be recovered for a tagged model",
    "invalid_value": "a value no target column can hold: a timestamp that is infinite or "
    "outside the years 1 to 9999, a number beyond float8; the detail names each",
    "database_rejected": "the target database refused the user's rows (a constraint the "
    "validation did not foresee): every source row of that user is set aside; the detail "
    "holds the server's message",
}
"""Why a legacy row (or ``saved_profiles`` element) was quarantined, by ``reason``."""

REPAIR_KINDS: Mapping[str, str] = {
    "renamed_key": "the older parameter key Rs was read as Rsh",
    "string_number": 'a number stored as a JSON string ("100") was read as the number',
    "filled_default": "a missing value took the legacy app's default (grid_size 10, "
    "num_points 100, min_freq 0.1, max_freq 100000, name 'Untitled circuit')",
    "clamped_grid_size": "grid_size outside 2..25 was clamped into that range",
    "clamped_num_points": "num_points outside 10..1000 was clamped into that range",
    "filled_frequency_range": "circuit_parameters.frequency_range was missing or disagreed "
    "with min_freq/max_freq; it was set from them",
    "renamed_duplicate": "a name another of the user's configurations (or sessions) already "
    "has got a suffix: (copy N), (session NAME) for a saved_profiles element, (N) for a "
    "session",
    "user_from_session": "a tagged model without user_id took its session's user",
    "dropped_session": "a tagged model's session_id was cleared: that session is "
    "quarantined, or belongs to another user",
    "recovered_configuration": "a user with tagged models but no circuit got one "
    "configuration rebuilt from the models' parameters (recorded on the first model)",
    "merged_value_dropped": "identical circuits merged into one configuration; this member's "
    "different value lost to the most recently updated member's",
    "decoded_json_string": "a JSON column held its object or array as a JSON string (the app "
    "wrote JSON.stringify(...)); it was decoded",
}
"""What was changed in a row that migrated, by ``kind`` (the original value is recorded)."""

LINK_METHODS: Mapping[str, str] = {
    "override": "the reviewer's overrides file chose the configuration",
    "explicit": "the app's own link (S2 configuration_id, S4 circuit_config_id) names the "
    "configuration; flagged for review when the stored resnorm contradicts it",
    "resnorm": "the model's stored resnorm recomputes on this configuration (the strongest "
    "evidence)",
    "session": "the configuration holds a circuit saved in the model's session",
    "time": "the model was tagged while the configuration existed",
    "proximity": "the configuration's parameters are the nearest to the model's",
    "recovered": "the model's user had no circuit: linked to a configuration rebuilt from "
    "the models",
}
"""How a tagged model's configuration was chosen, by ``method`` (strongest first)."""
