"""What a chunk is made of on its way to Discord: sealing (hash + AES-GCM), its MIME type, and
its bytes in memory sent as a file."""
