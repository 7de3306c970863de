package chaos_test

import (
	"fmt"
	"math/rand"
	"sync"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/controllers"
)

// load submits jobs steadily: a mix of two heavy users, who keep many 1- and 2-GPU jobs in the
// queue, and light users, each with a single 1-GPU job at a time. When the heavy users fill the
// GPUs, a light user's job is on its user's 1st GPU and preempts the lowest-ranked heavy job.
type load struct {
	e      *env
	c      *checker
	rng    *rand.Rand
	total  int
	active int
	done   chan struct{}
	stop   chan struct{}
	once   sync.Once

	mu        sync.Mutex
	submitted int
}

var lightUsers = []string{"lea", "luc", "lin", "lou", "lia", "leo", "lil", "lux"}

func (e *env) startLoad(c *checker, seed int64, total, active int) *load {
	l := &load{e: e, c: c, rng: rand.New(rand.NewSource(seed)), total: total, active: active,
		done: make(chan struct{}), stop: make(chan struct{})}
	go l.run()
	return l
}

func (l *load) run() {
	defer close(l.done)
	for i := 0; i < l.total; i++ {
		for l.c.unfinished() >= l.active {
			select {
			case <-l.stop:
				return
			case <-l.e.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		select {
		case <-l.stop:
			return
		case <-time.After(time.Duration(20+l.rng.Intn(120)) * time.Millisecond):
		}
		var user string
		var gpus int32 = 1
		runtime := time.Duration(300+l.rng.Intn(2200)) * time.Millisecond
		if l.rng.Intn(2) == 0 {
			user = []string{"hana", "hugo"}[l.rng.Intn(2)]
			if l.rng.Intn(10) < 3 {
				gpus = 2
			}
		} else {
			user = lightUsers[l.rng.Intn(len(lightUsers))]
		}
		j := job(fmt.Sprintf("j%04d-%s", i, user), user, gpus, runtime)
		if err := poll(l.e.ctx, time.Minute, func() error { return l.e.c.Create(l.e.ctx, j) }); err != nil {
			return
		}
		l.mu.Lock()
		l.submitted++
		l.mu.Unlock()
	}
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.submitted
}

// halt stops submitting and waits for the submitter to return.
func (l *load) halt() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// unfinished counts the jobs of the job mirror that are not finished.
func (c *checker) unfinished() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, j := range c.jobs {
		if !controllers.IsFinished(&j.Status) {
			n++
		}
	}
	return n
}
