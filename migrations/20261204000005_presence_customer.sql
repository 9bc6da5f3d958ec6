-- Issue 17: a customer's presence names their conversation, so staff see whether the
-- customer of a conversation is online before that customer has written (the user ids
-- of a customer are not otherwise known to staff).
ALTER TABLE presence ADD COLUMN customer_id TEXT;
