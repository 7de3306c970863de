package queue_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// The worked example of the README: 4 GPUs, three users.
func ExampleDecide() {
	t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	jobs := []queue.Job{
		{Key: "lab/a1", User: "alice", GPUs: 2, Created: at(0)},
		{Key: "lab/a2", User: "alice", GPUs: 1, Created: at(1)},
		{Key: "lab/b1", User: "bob", GPUs: 1, Created: at(2)},
		{Key: "lab/b2", User: "bob", GPUs: 2, Created: at(3)},
		{Key: "lab/c1", User: "carol", GPUs: 1, Created: at(4)},
		{Key: "lab/c2", User: "carol", GPUs: 1, Created: at(5), Priority: 5},
	}
	show := func(d queue.Decision) {
		for _, e := range d.Order {
			fmt.Println(strings.TrimSpace(fmt.Sprintf("rank %d %s GPUs %s admit=%v position=%d %s", e.Rank, e.Key, e.UserGPUs(), e.Admit, e.Position, e.Reason)))
		}
	}
	d := queue.Decide(queue.Snapshot{Jobs: jobs, Capacity: 4, Now: at(10), MaxHeadWait: 30 * time.Minute})
	show(d)

	fmt.Println("-- b1 finishes; c2 and a1 run")
	var next []queue.Job
	for _, j := range jobs {
		switch j.Key {
		case "lab/b1":
			continue
		case "lab/c2", "lab/a1":
			j.State = queue.Holding
		}
		next = append(next, j)
	}
	show(queue.Decide(queue.Snapshot{Jobs: next, Capacity: 4, Now: at(20), MaxHeadWait: 30 * time.Minute}))
	// Output:
	// rank 1 lab/b1 GPUs 1 admit=true position=0
	// rank 2 lab/c2 GPUs 1 admit=true position=0
	// rank 3 lab/a1 GPUs 1-2 admit=true position=0
	// rank 4 lab/c1 GPUs 2 admit=false position=1 0 GPUs free, needs 1
	// rank 5 lab/a2 GPUs 3 admit=false position=2 0 GPUs free, needs 1
	// rank 6 lab/b2 GPUs 2-3 admit=false position=3 0 GPUs free, needs 2
	// -- b1 finishes; c2 and a1 run
	// rank 1 lab/c2 GPUs 1 admit=false position=0
	// rank 2 lab/a1 GPUs 1-2 admit=false position=0
	// rank 3 lab/b2 GPUs 1-2 admit=false position=1 1 GPU free, needs 2
	// rank 4 lab/c1 GPUs 2 admit=true position=0
	// rank 5 lab/a2 GPUs 3 admit=false position=2 0 GPUs free, needs 1
}
