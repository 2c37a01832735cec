#pragma once
// Cooperative shutdown: SIGINT/SIGTERM set a flag that long loops poll so they can write a
// checkpoint and exit cleanly instead of dying mid-write.
namespace instinct {

/// Installs SIGINT/SIGTERM handlers that record the signal (idempotent).
void install_stop_handlers();
/// The signal number received since install (0 if none).
int stop_signal();
/// Records `sig` as if it had been received (ranks agreeing to stop together).
void raise_stop_signal(int sig);
/// Clears the recorded signal (tests).
void reset_stop_signal();

}  // namespace instinct
