-- Adopting latchkey: each profile names the latchkey account that signs in to it. The version
-- falls between two of latchkey's, as an app's migrations written while adopting it would.
ALTER TABLE users ADD COLUMN latchkey_user uuid UNIQUE;
COMMENT ON COLUMN users.latchkey_user IS 'The latchkey account (owner key user:<uuid>) of this profile.';
