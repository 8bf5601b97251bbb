// Package budget holds the time budgets of the demo's jobs in one place: how long each waits for the demo's
// lock and how long its work may take once it holds it. The unit generator sets TimeoutStartSec= to their
// sum and the demo waits for its lock exactly the job's LockWait, so the two always agree: a job is never
// killed by systemd while it is still waiting in line, and never waits longer than another job may hold the
// lock.
package budget

import "time"

// Job is one of the demo's jobs.
type Job struct {
	What     string        // written into the lock file: "demo switch"
	LockWait time.Duration // how long it waits for the demo's lock
	Work     time.Duration // how long it may take once it holds the lock
}

// Timeout is the job's whole budget: its unit's TimeoutStartSec=.
func (j Job) Timeout() time.Duration { return j.LockWait + j.Work }

// The demo's jobs. A switch does not wait out the long jobs (Yields): it skips its turn; it waits only for
// short ones (a stop, an import of hooks). The repair, started by OnFailure= possibly while an upgrade runs,
// waits for the longest job there is, the upgrade.
var (
	Switch       = Job{What: "demo switch", LockWait: 5 * time.Minute, Work: 10 * time.Minute}
	Start        = Job{What: "demo start", LockWait: Switch.Timeout(), Work: 10 * time.Minute}
	Stop         = Job{What: "demo stop", LockWait: 3 * time.Minute, Work: 2 * time.Minute}
	Upgrade      = Job{What: "demo upgrade", LockWait: Switch.Timeout(), Work: 3 * time.Hour}
	RestoreCrash = Job{What: "demo restoreCrash", LockWait: Upgrade.Timeout(), Work: time.Hour}
	// The daily certificate renewal waits for whatever may hold the demo (it has all day); its work is an
	// ACME order (at most 5 minutes) and two graceful reloads.
	Renew = Job{What: "demo renew", LockWait: RestoreCrash.Timeout(), Work: 10 * time.Minute}
	// By hand only (no unit): they wait as long as anything may hold the lock.
	Build       = Job{What: "demo build", LockWait: RestoreCrash.Timeout(), Work: 0}
	ImportHooks = Job{What: "demo importHooks", LockWait: RestoreCrash.Timeout()}
	Destroy     = Job{What: "demo destroy", LockWait: RestoreCrash.Timeout()}
)

// Yields tells whether a switch skips its turn rather than wait for the job what holding the lock: the
// jobs that may hold it longer than a switch waits, each of which leaves one container serving.
func Yields(what string) bool {
	for _, j := range []Job{Upgrade, RestoreCrash, Build, Start, Renew} {
		if j.What == what {
			return true
		}
	}
	return false
}
