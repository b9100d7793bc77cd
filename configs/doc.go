// Package configs defines pgferry's configuration: plain structs with TOML
// tags, the defaults, validation that reports every problem at once, reading
// of PgBouncer's pgbouncer.ini, PGFERRY_* environment overrides, conversion to
// TOML and the list of settings that cannot change on reload.
//
// A *Config returned by [Load], [LoadWithEnv] or [Parse] is complete: derived
// per-database defaults (port, pool sizes, TLS mode, Entra settings, replica
// lag limits) are filled in, relative file paths are resolved against the
// config file's directory, password_file contents are read, and [Config.Validate]
// has passed. Callers treat it as immutable and swap whole values on reload
// (for example through an atomic.Pointer[Config]); [RestartOnlyChanges] lists
// the keys a reload cannot apply.
//
// Secrets are held in [Secret], which prints as "[redacted]" through fmt and
// encoding.TextMarshaler; only [Secret.Reveal] returns the value.
//
// Durations are written as PgBouncer-style seconds (120, "0.5") or Go duration
// strings ("2m", "500ms"); see [Duration].
//
// Package configs imports no other pgferry package and does no logging: load
// warnings are returned to the caller, which logs them.
package configs
