-- A poll that found nothing (an idle mailbox sync or call-log import) stays a row,
-- marked idle: a second copy of its broker message then finds it finished and is
-- ignored, where a deleted row would be recorded as an orphan, a dead job for nothing.
-- Operators' listings, counts and stats leave idle rows out; retention removes them
-- after ten minutes. No index: every query that filters on it already narrows by
-- something else, and a constant default adds the column without rewriting the table.
ALTER TABLE jobs ADD COLUMN idle BOOLEAN NOT NULL DEFAULT false;
