"""Durable outbound HTTP: what a guest may reach (`policy`), how a request leaves (`transport`),
and what the journal keeps of it (`records`). The host calls that use them are
`runtime.wasi.http` (the `roost` imports) and `runtime.httpdev` (the device folder)."""
