-- Per current source file with memory tables: rows in SQLite (ledger) = rows in raw = kept + superseded + moved.
-- Recomputed from the counts rather than trusting the `reconciled` flag.
select *
from {{ ref('reconciliation') }}
where rows_in_sqlite is distinct from rows_in_raw
   or rows_in_raw is distinct from kept + superseded + moved
