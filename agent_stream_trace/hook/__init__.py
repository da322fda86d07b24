"""The emitter hook: record every session an agent-stream server sends, never touching the stream."""
