//! raft-rs logs through `slog`; rill logs through `tracing`. This drain
//! forwards each raft-rs record as a `tracing` event (target `raft`), with
//! its key-value pairs folded into the message: warnings and errors at
//! their level, and raft-rs's info lines at DEBUG: they come per group and
//! per term (thousands of groups make them nearly all of a broker's log),
//! and rill logs what an operator needs of them (a leader change, a
//! membership change) itself. `RUST_LOG=raft=info` brings them back.

use std::fmt::Write as _;

/// A `slog` drain that writes into `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingDrain;

struct Collect(String);

impl slog::Serializer for Collect {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV as _;
        let mut kv = Collect(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{}", kv.0)
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Info | slog::Level::Debug => {
                tracing::debug!(target: "raft", "{msg}{}", kv.0)
            }
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

/// A raft-rs logger whose records go to `tracing`, tagged with `values`.
pub fn logger(values: slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV + 'static>) -> slog::Logger {
    slog::Logger::root(TracingDrain, values)
}
