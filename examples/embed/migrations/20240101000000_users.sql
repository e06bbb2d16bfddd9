-- The demo app's own accounts, from before it adopted latchkey. latchkey has a `users` table
-- too; the two never meet, because latchkey keeps its tables in a schema of its own.
CREATE TABLE users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    display_name text NOT NULL
);
COMMENT ON TABLE users IS 'The demo app''s own profiles (examples/embed.rs), not latchkey''s accounts.';
COMMENT ON COLUMN users.display_name IS 'The name the app shows.';
