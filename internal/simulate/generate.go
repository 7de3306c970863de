package simulate

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// LabParams describe a lab's workload for Generate. DefaultLabParams are a 30-GPU lab of 25
// people over 30 days: about 20,000 jobs, most of them short, a few running for days, that ask
// for more GPUs in the working day than the lab has and leave them free at night.
type LabParams struct {
	// Seed makes the trace: the same parameters and seed give the same trace.
	Seed uint64
	// Start is the trace's first day, at 00:00 (a Monday by default); hours of the day are in
	// its time zone.
	Start time.Time
	Days  int
	// Users is the number of people; their activity is skewed (UserSkew): the i-th person
	// submits in proportion to 1/i^UserSkew.
	Users    int
	UserSkew float64
	// JobsPerDay is the mean number of submissions per day over a week; Hourly weighs the hours
	// of a working day (any scale) and Weekend the weekend days against working days.
	JobsPerDay float64
	Hourly     [24]float64
	Weekend    float64
	// GPUMix gives the share of each GPU count among batch jobs.
	GPUMix map[int32]float64
	// BatchMedian and BatchSigma make batch run times log-normal (median, and the standard
	// deviation of their logarithm), capped at BatchMax; BatchTimeout is their spec.timeout
	// (zero: none) and TimeoutShare the share of batch jobs that set it.
	BatchMedian, BatchMax, BatchTimeout time.Duration
	BatchSigma, TimeoutShare            float64
	// Checkpoint is how often batch jobs save their progress (TraceJob.Checkpoint); sessions
	// never do.
	Checkpoint time.Duration
	// InteractiveShare is the share of interactive sessions (1 GPU, spec.timeout
	// InteractiveTimeout): log-normal active time around InteractiveMedian (sigma 0.8) at
	// InteractiveUtilization percent; a share Forgotten of them then stay open with idle GPUs
	// (1%) until their owner deletes them, a log-normal time around ForgottenMedian later.
	InteractiveShare                                       float64
	InteractiveMedian, InteractiveTimeout, ForgottenMedian time.Duration
	InteractiveUtilization                                 int
	Forgotten                                              float64
	// HighPriority and LowPriority are the shares of batch jobs with priority 1 and -1; the
	// others have 0.
	HighPriority, LowPriority float64
}

// DefaultLabParams are Generate's defaults (documented in docs/simulate.md).
func DefaultLabParams() LabParams {
	return LabParams{
		Seed: 1, Start: time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), Days: 30,
		Users: 25, UserSkew: 1, JobsPerDay: 667,
		Hourly: [24]float64{0.25, 0.2, 0.15, 0.12, 0.12, 0.15, 0.3, 0.6, 1.1, 1.6, 1.8, 1.8,
			1.4, 1.6, 1.9, 1.9, 1.8, 1.5, 1.2, 1, 0.9, 0.8, 0.6, 0.4},
		Weekend:     0.4,
		GPUMix:      map[int32]float64{1: 0.72, 2: 0.17, 4: 0.09, 8: 0.02},
		BatchMedian: 5 * time.Minute, BatchSigma: 1.8, BatchMax: 72 * time.Hour,
		BatchTimeout: 72 * time.Hour, TimeoutShare: 0.6, Checkpoint: 30 * time.Minute,
		InteractiveShare: 0.2, InteractiveMedian: 30 * time.Minute, InteractiveTimeout: 8 * time.Hour,
		InteractiveUtilization: 35, Forgotten: 0.1, ForgottenMedian: 3 * time.Hour,
		HighPriority: 0.03, LowPriority: 0.05,
	}
}

// userNames are the generated people's names (user27 and on after them).
var userNames = strings.Fields("ada bob cam dan eve fay gus hal ivy jon kim leo mia ned oli pam quin rae sam tia uma vic wes xia yan zoe")

// Generate writes a lab-like trace: arrivals by hour of the day and day of the week (a Poisson
// number per hour), people of different activity, GPU counts, log-normal run times, interactive
// sessions that sometimes sit idle. Deterministic for a seed.
func Generate(p LabParams) ([]TraceJob, error) {
	if p.Days <= 0 || p.Users <= 0 || p.JobsPerDay < 0 || p.Weekend < 0 {
		return nil, fmt.Errorf("generate: days and users must be positive, jobs per day and weekend not negative")
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x5eed_c71ab))
	users := make([]string, p.Users)
	userCDF := make([]float64, p.Users)
	var sum float64
	for i := range users {
		if i < len(userNames) {
			users[i] = userNames[i]
		} else {
			users[i] = "user" + strconv.Itoa(i+1)
		}
		sum += 1 / math.Pow(float64(i+1), p.UserSkew)
		userCDF[i] = sum
	}
	var hourly float64
	for _, w := range p.Hourly {
		hourly += w
	}
	if hourly <= 0 {
		return nil, fmt.Errorf("generate: the hourly weights are all zero")
	}
	// λ of an hour: JobsPerDay × its weight, scaled so that a week has 7 × JobsPerDay jobs.
	scale := p.JobsPerDay * 7 / (hourly * (5 + 2*p.Weekend))
	gpus := slices.Sorted(maps.Keys(p.GPUMix))
	var jobs []TraceJob
	for h := range p.Days * 24 {
		at := p.Start.Add(time.Duration(h) * time.Hour)
		rate := scale * p.Hourly[at.Hour()]
		if wd := at.Weekday(); wd == time.Saturday || wd == time.Sunday {
			rate *= p.Weekend
		}
		for range poisson(rng, rate) {
			j := TraceJob{Submit: at.Add(time.Duration(rng.Int64N(int64(time.Hour))) / time.Second * time.Second)}
			j.User = users[pick(rng, userCDF)]
			if rng.Float64() < p.InteractiveShare {
				interactive(rng, p, &j)
			} else {
				batch(rng, p, gpus, &j)
			}
			jobs = append(jobs, j)
		}
	}
	slices.SortStableFunc(jobs, func(a, b TraceJob) int { return a.Submit.Compare(b.Submit) })
	for i := range jobs {
		kind := "train"
		if jobs[i].Interactive {
			kind = "session"
		}
		jobs[i].Name = fmt.Sprintf("%s-%05d", kind, i+1)
	}
	return jobs, nil
}

func interactive(rng *rand.Rand, p LabParams, j *TraceJob) {
	j.Interactive, j.GPUs, j.Timeout = true, 1, p.InteractiveTimeout
	active := max(logNormal(rng, p.InteractiveMedian, 0.8), time.Minute).Round(time.Minute)
	util := strconv.Itoa(p.InteractiveUtilization)
	j.Runtime, j.Utilization = active, util
	if rng.Float64() < p.Forgotten {
		// Busy for its active minutes (one profile value each), then idle until its owner
		// deletes it, or its timeout.
		j.Runtime, j.Cancel = j.Timeout, active+logNormal(rng, p.ForgottenMedian, 0.6).Round(time.Minute)
		j.Utilization = strings.Repeat(util+",", int(active/time.Minute)) + "1"
	}
	if j.Timeout > 0 {
		j.Runtime = min(j.Runtime, j.Timeout)
	}
}

func batch(rng *rand.Rand, p LabParams, gpus []int32, j *TraceJob) {
	u := rng.Float64()
	var total float64
	for _, g := range gpus {
		total += p.GPUMix[g]
	}
	u *= total
	for _, g := range gpus {
		j.GPUs = g
		if u -= p.GPUMix[g]; u < 0 {
			break
		}
	}
	j.Runtime = min(max(logNormal(rng, p.BatchMedian, p.BatchSigma), 30*time.Second), p.BatchMax).Round(time.Second)
	if rng.Float64() < p.TimeoutShare {
		j.Timeout = p.BatchTimeout
	}
	j.Checkpoint = p.Checkpoint
	switch u := rng.Float64(); {
	case u < p.HighPriority:
		j.Priority = 1
	case u < p.HighPriority+p.LowPriority:
		j.Priority = -1
	}
}

// logNormal draws a log-normal duration of that median and sigma.
func logNormal(rng *rand.Rand, median time.Duration, sigma float64) time.Duration {
	return time.Duration(float64(median) * math.Exp(sigma*rng.NormFloat64()))
}

// poisson draws a Poisson number of mean lambda (Knuth's method, a normal approximation above 30).
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return max(int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())), 0)
	}
	l, k, prod := math.Exp(-lambda), 0, rng.Float64()
	for prod > l {
		k++
		prod *= rng.Float64()
	}
	return k
}

// pick draws an index of a cumulative weight table.
func pick(rng *rand.Rand, cdf []float64) int {
	i, _ := slices.BinarySearch(cdf, rng.Float64()*cdf[len(cdf)-1])
	return min(i, len(cdf)-1)
}
