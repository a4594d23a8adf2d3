"""Table definitions, Pandera models, DDL text and error types. Imports nothing of ours."""
