"""The engine: daemon, scheduler, runner (the one owner of a Result), shards, reload watch."""
