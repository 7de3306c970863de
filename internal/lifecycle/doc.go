// Package lifecycle is the pure part of the operator's decision loop after the engine has decided:
// what a decision asks the loop to do (Plan: evictions, deletions, pod creations), the status
// each job should have after it (DesiredStatus, EvictedStatus, with one setter per condition), the
// idle warnings and suspensions (IdleWarnings), and the name of each admission's pod (PodName).
// No client, no clock: the operator (controllers) carries the actions out against the API server,
// and the simulator (internal/simulate) carries them out in memory, so both live the same
// lifecycle.
package lifecycle
