"""Everything that talks SQL: the schema (``models``), engines (``engine``), migrations
(``migrate``) and one small module per concern that reads or writes rows."""
