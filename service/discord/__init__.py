"""Discord: one client per bot token (discord.py underneath), a slot's channel store, and the
pacing of every request to Discord's rate limits (pure arithmetic in `pacing`, the waiting in
`gate`)."""
