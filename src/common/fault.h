#pragma once
// Test-only fault injection for crash-safety trials. With INSTINCT_FAULT=<point>[@<n>] in the
// environment, the process kills itself with SIGKILL (as a pre-empted job dies: no handlers, no
// destructors, no flush) the n-th time (default: the first) it passes fault_point(<point>). Without
// the variable every call is a no-op. Points (docs/reliability.md):
//   archive.record   after a record of a torch.save archive is written (a partial *.tmp.<pid>)
//   atomic.commit    an atomically written file is complete but not yet renamed into place
//   checkpoint.saved a step checkpoint is in place; best.pt and pruning not yet done
//   metrics.row      half of a metrics.jsonl row is written (a torn line)
//   train.step       an optimizer step is done, its row and checkpoint not yet written
namespace instinct {

/// Passes point `name`; SIGKILLs the process when INSTINCT_FAULT names this hit. `before` runs just
/// before the kill (e.g. writing half a row), and only then.
void fault_point(const char* name, void (*before)(void*) = nullptr, void* arg = nullptr);

}  // namespace instinct
