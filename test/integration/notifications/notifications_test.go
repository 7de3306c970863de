package notifications_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/mailcatcher"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

const timeout = 20 * time.Second

// receiver is a webhook endpoint (Slack, Mattermost or the lab's generic one) that keeps the JSON
// bodies it receives.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
}

func newReceiver() *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body map[string]any
		Expect(json.NewDecoder(req.Body).Decode(&body)).To(Succeed())
		r.mu.Lock()
		r.bodies = append(r.bodies, body)
		r.mu.Unlock()
	}))
	DeferCleanup(r.Close)
	return r
}

// texts are the `text` of the bodies that contain want.
func (r *receiver) texts(want string) func() []string {
	return func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []string
		for _, b := range r.bodies {
			if t, _ := b["text"].(string); strings.Contains(t, want) {
				out = append(out, t)
			}
		}
		return out
	}
}

// kinds are the `kind`s the generic webhook received for a job.
func (r *receiver) kinds(ns, job string) func() []string {
	return func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []string
		for _, b := range r.bodies {
			if j, _ := b["job"].(map[string]any); j["namespace"] == ns && j["name"] == job {
				out = append(out, fmt.Sprint(b["kind"]))
			}
		}
		return out
	}
}

// mailbox runs the local mail catcher's SMTP server (the one make run-local uses) on addr.
type mailbox struct {
	catcher *mailcatcher.Catcher
	addr    string
	stop    func()
}

func startMailbox(addr string) *mailbox {
	l, err := net.Listen("tcp", addr)
	Expect(err).NotTo(HaveOccurred())
	c := mailcatcher.NewCatcher(100, clock.RealClock{})
	s := c.SMTPServer()
	go func() { _ = s.Serve(l) }()
	m := &mailbox{catcher: c, addr: l.Addr().String(), stop: func() { _ = s.Close(); _ = l.Close() }}
	DeferCleanup(m.stop)
	return m
}

// to are the messages sent to an address whose subject or text contains want.
func (m *mailbox) to(addr, want string) func() []mailcatcher.Message {
	return func() []mailcatcher.Message {
		var out []mailcatcher.Message
		for _, msg := range m.catcher.Messages() {
			if len(msg.To) == 1 && msg.To[0] == addr && (strings.Contains(msg.Subject, want) || strings.Contains(msg.Text, want)) {
				out = append(out, msg)
			}
		}
		return out
	}
}

// sentTotal is cvlab_notifications_total{channel,kind,result} as the manager's registry has it.
func sentTotal(channel, kind, result string) func() float64 {
	return func() float64 {
		families, err := metrics.Registry.Gather()
		Expect(err).NotTo(HaveOccurred())
		for _, f := range families {
			if f.GetName() != "cvlab_notifications_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["channel"] == channel && labels["kind"] == kind && labels["result"] == result {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
}

var _ = Describe("Personal notifications", func() {
	var (
		ctx   = context.Background()
		ns    string
		opNS  string // the operator's namespace: the lab directory and the sent record
		stop  func()
		mail  *mailbox
		slack *receiver
		mm    *receiver
		lab   *receiver
	)
	// The lab directory: alice has every contact, bob email only, carol none.
	directory := func() {
		Expect(fw.Client.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: validation.DirectoryName},
			Data: map[string]string{
				"alice": "name=alice uid=1001 groupName=cvlab gid=100 email=alice@lab.example slack=U0ALICE1 mattermost=alice",
				"bob":   "name=bob uid=1002 groupName=cvlab gid=100 email=bob@lab.example",
				"carol": "name=carol uid=1003 groupName=cvlab gid=100",
			}})).To(Succeed())
	}
	start := func(smtpAddr string, due notify.DueSettings) {
		cfg := notify.Config{
			SMTP:            &notify.SMTPConfig{URL: "smtp://" + smtpAddr, From: "cvlab-queue <queue@lab.example>", StartTLS: "none", Timeout: 2 * time.Second},
			SlackWebhookURL: slack.URL, MattermostWebhookURL: mm.URL, WebhookURL: lab.URL,
			DashboardURL: "https://queue.lab.example/", GroupWindow: time.Second, Attempts: 6, Backoff: 300 * time.Millisecond,
			Log: GinkgoLogr,
		}
		if due.Defaults == nil {
			due.Defaults = []notify.Kind{notify.KindPreempted, notify.KindGPUIdle, notify.KindFailed, notify.KindDeadlineSoon}
		}
		due.MaxAge = time.Hour
		stop = fw.StartManagerWith(controllers.Options{GPUCapacity: -1, MaxHeadWait: time.Hour, Preemption: queue.PreemptFirstGPU},
			"0", func(mgr ctrl.Manager, opts *controllers.Options) {
				n, err := controllers.SetupNotifications(mgr, opNS, cfg, due)
				Expect(err).NotTo(HaveOccurred())
				opts.Notifications = n
			})
	}
	create := func(name, user string, gpus int32, mod ...func(*cvlabv1alpha1.CvlabJob)) {
		j := framework.Job(ns, name, user, gpus)
		for _, m := range mod {
			m(j)
		}
		Expect(fw.Client.Create(ctx, j)).To(Succeed())
	}
	get := func(name string) *cvlabv1alpha1.CvlabJob {
		j, err := fw.Get(ctx, ns, name)()
		Expect(err).NotTo(HaveOccurred())
		return j
	}
	phase := func(name string) func() cvlabv1alpha1.JobPhase {
		return func() cvlabv1alpha1.JobPhase { return get(name).Status.Phase }
	}
	run := func(name string) string {
		pod := fw.StartPod(ctx, ns, name, timeout)
		Eventually(phase(name), timeout).Should(Equal(cvlabv1alpha1.PhaseRunning))
		return pod
	}
	fail := func(name string) {
		fw.SetPodPhase(ctx, ns, get(name).Status.PodName, corev1.PodFailed, "")
		Eventually(phase(name), timeout).Should(Equal(cvlabv1alpha1.PhaseFailed))
	}
	events := func(name, reason string) func() []string {
		return func() []string {
			var evs eventsv1.EventList
			Expect(fw.Client.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
			var notes []string
			for _, e := range evs.Items {
				if e.Regarding.Name == name && e.Reason == reason {
					notes = append(notes, e.Note)
				}
			}
			return notes
		}
	}

	BeforeEach(func() {
		ns = fw.NewNamespace(ctx)
		opNS = fw.NewNamespace(ctx)
		directory()
		mail = startMailbox("127.0.0.1:0")
		slack, mm, lab = newReceiver(), newReceiver(), newReceiver()
		fw.CreateGPUNode(ctx, ns+"-n1", 4)
	})
	AfterEach(func() {
		if stop != nil {
			stop()
			stop = nil
		}
		fw.Cleanup(ctx, ns)
	})

	It("tells a failed job's owner once, on each of their channels: reason, exit code, where the logs are; never its environment or command", func() {
		start(mail.addr, notify.DueSettings{})
		create("train", "alice", 1, func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Env = []corev1.EnvVar{{Name: "WANDB_API_KEY", Value: "hunter2-secret"}}
			j.Spec.Command = []string{"python", "train.py", "--token=also-secret"}
		})
		create("quiet", "alice", 1, func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Notify = []cvlabv1alpha1.NotifyKind{cvlabv1alpha1.NotifyNone}
		})
		run("train")
		run("quiet")
		fail("train")
		fail("quiet")
		pod := get("train").Status.PodName

		Eventually(mail.to("alice@lab.example", "train"), timeout).Should(HaveLen(1))
		m := mail.to("alice@lab.example", "train")()[0]
		Expect(m.Subject).To(ContainSubstring("failed"))
		for _, part := range []string{m.Text, m.HTML} {
			Expect(part).To(ContainSubstring(ns + "/train"))
			Expect(part).To(ContainSubstring("exit code 1"))
			Expect(part).To(ContainSubstring("kubectl logs -n " + ns + " " + pod))
			Expect(part).To(ContainSubstring("kubectl cvlab why"))
			Expect(part).To(ContainSubstring("https://queue.lab.example/"))
			Expect(part).NotTo(ContainSubstring("secret"))
			Expect(part).NotTo(ContainSubstring("train.py"))
		}
		By("chat: alice is mentioned on Slack and Mattermost; the lab webhook gets the event, kind Failed")
		Eventually(slack.texts("<@U0ALICE1>"), timeout).Should(HaveLen(1))
		Eventually(mm.texts("@alice"), timeout).Should(HaveLen(1))
		Eventually(lab.kinds(ns, "train"), timeout).Should(Equal([]string{"Failed"}))
		Expect(sentTotal("email", "Failed", "sent")()).To(BeNumerically(">=", 1))

		By("nothing twice; nothing at all about the job whose spec.notify is [None]")
		Consistently(mail.to("alice@lab.example", "train"), 3*time.Second).Should(HaveLen(1))
		Expect(slack.texts("<@U0ALICE1>")()).To(HaveLen(1))
		Expect(lab.kinds(ns, "train")()).To(HaveLen(1))
		Expect(mail.to("alice@lab.example", "quiet")()).To(BeEmpty())
		Expect(lab.kinds(ns, "quiet")()).To(BeEmpty())
	})

	It("tells the preempted owner who took the GPUs and why, and groups a burst into one message", func() {
		start(mail.addr, notify.DueSettings{})
		// bob fills the node: his 1st to 4th GPUs; carol, dave and erin's 1st-GPU jobs evict his
		// 2nd to 4th (FirstGPU): three preemptions within the group window.
		for i := 1; i <= 4; i++ {
			create(fmt.Sprintf("bob-%d", i), "bob", 1, func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Priority = int32(10 - i) })
			run(fmt.Sprintf("bob-%d", i))
		}
		for _, u := range []string{"carol", "dave", "erin"} {
			create(u+"-1", u, 1)
		}
		for i := 2; i <= 4; i++ {
			Eventually(phase(fmt.Sprintf("bob-%d", i)), timeout).Should(Equal(cvlabv1alpha1.PhaseQueued))
		}
		Eventually(mail.to("bob@lab.example", "preempted"), timeout).ShouldNot(BeEmpty())
		Consistently(mail.to("bob@lab.example", "preempted"), 3*time.Second).Should(HaveLen(1))
		m := mail.to("bob@lab.example", "preempted")()[0]
		Expect(m.Subject).To(ContainSubstring("3 of your jobs were preempted"))
		for i := 2; i <= 4; i++ {
			Expect(m.Text).To(ContainSubstring(fmt.Sprintf("%s/bob-%d", ns, i)))
		}
		for _, u := range []string{"carol", "dave", "erin"} {
			Expect(m.Text).To(ContainSubstring(fmt.Sprintf("%s/%s-1", ns, u)))
		}
		Expect(m.Text).To(ContainSubstring("It is back in the queue at position"), "told where it stands")
		By("the lab webhook got one event per preemption, kind Preempted")
		for i := 2; i <= 4; i++ {
			Eventually(lab.kinds(ns, fmt.Sprintf("bob-%d", i)), timeout).Should(Equal([]string{"Preempted"}))
		}

	})

	It("says once, by an event, that an owner without contact is not told", func() {
		start(mail.addr, notify.DueSettings{})
		create("c1", "carol", 1)
		create("c2", "carol", 1)
		run("c1")
		run("c2")
		fail("c1")
		fail("c2")
		Eventually(func() int {
			return len(events("c1", cvlabv1alpha1.EventNotNotified)()) + len(events("c2", cvlabv1alpha1.EventNotNotified)())
		},
			timeout).Should(Equal(1))
		Consistently(func() int {
			return len(events("c1", cvlabv1alpha1.EventNotNotified)()) + len(events("c2", cvlabv1alpha1.EventNotNotified)())
		},
			3*time.Second).Should(Equal(1))
		Expect(append(events("c1", cvlabv1alpha1.EventNotNotified)(), events("c2", cvlabv1alpha1.EventNotNotified)()...)[0]).To(
			ContainSubstring("carol has no email, slack or mattermost field in the lab directory"))
		Expect(sentTotal("email", "Failed", "nocontact")()).To(BeNumerically(">=", 1))
		Expect(mail.catcher.Messages()).To(BeEmpty())
		By("the lab's webhook still gets every event")
		Eventually(lab.kinds(ns, "c1"), timeout).Should(Equal([]string{"Failed"}))
	})

	It("warns before the timeout, and tells about a start after a long wait when asked", func() {
		start(mail.addr, notify.DueSettings{DeadlineShare: 0.5, StartedAfter: 2 * time.Second})
		create("short", "alice", 1, func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Timeout = &metav1.Duration{Duration: 6 * time.Second} })
		run("short")
		Eventually(mail.to("alice@lab.example", "short"), timeout).Should(HaveLen(1))
		m := mail.to("alice@lab.example", "short")()[0]
		Expect(m.Text).To(ContainSubstring("timeout"))

		By("Started, asked for in spec.notify, after a wait longer than --notify-started-after")
		// Three others' 1st-GPU jobs fill the node; bob's 1st-GPU job, younger, ranks below them.
		for _, u := range []string{"dave", "erin", "frank"} {
			create(u, u, 1)
			run(u)
		}
		create("patient", "bob", 1, func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Notify = []cvlabv1alpha1.NotifyKind{cvlabv1alpha1.NotifyStarted}
		})
		Eventually(phase("patient"), timeout).Should(Equal(cvlabv1alpha1.PhaseQueued))
		Consistently(phase("patient"), 3*time.Second).Should(Equal(cvlabv1alpha1.PhaseQueued))
		fw.SetPodPhase(ctx, ns, get("short").Status.PodName, corev1.PodSucceeded, "")
		run("patient")
		Eventually(mail.to("bob@lab.example", "patient"), timeout).Should(HaveLen(1))
		Expect(mail.to("bob@lab.example", "patient")()[0].Text).To(ContainSubstring("started"))
	})

	It("neither re-sends after a restart nor drops what was due when the manager stopped; retries a mail server that was down", func() {
		// The mail server is down at first: its port is reserved, then closed.
		down := startMailbox("127.0.0.1:0")
		addr := down.addr
		down.stop()
		start(addr, notify.DueSettings{})
		create("a1", "alice", 1)
		run("a1")
		fail("a1")
		By("the chat and the lab webhook are not held back by the dead mail server")
		Eventually(slack.texts(ns+"/a1"), timeout).Should(HaveLen(1))
		Eventually(lab.kinds(ns, "a1"), timeout).Should(Equal([]string{"Failed"}))
		By("the mail server comes back: the message is delivered on a later attempt, once")
		up := startMailbox(addr)
		Eventually(up.to("alice@lab.example", "a1"), timeout).Should(HaveLen(1))
		// The record of what was sent, where a restart reads it.
		Eventually(func() map[string]string {
			var cm corev1.ConfigMap
			if err := fw.Client.Get(ctx, client.ObjectKey{Namespace: opNS, Name: notify.DefaultStoreName}, &cm); err != nil {
				return nil
			}
			return cm.Data
		}, timeout).Should(HaveKey(string(get("a1").UID) + ".Failed.final"))

		By("a restart sends nothing again")
		stop()
		stop = nil
		start(up.addr, notify.DueSettings{})
		Consistently(up.to("alice@lab.example", "a1"), 4*time.Second).Should(HaveLen(1))
		Expect(slack.texts(ns + "/a1")()).To(HaveLen(1))

		By("what became due while no manager ran is sent by the next one")
		create("a2", "alice", 1)
		run("a2")
		stop()
		stop = nil
		// The job fails while no manager runs; the next one records it and tells alice.
		fw.SetPodPhase(ctx, ns, get("a2").Status.PodName, corev1.PodFailed, "")
		start(up.addr, notify.DueSettings{})
		Eventually(phase("a2"), timeout).Should(Equal(cvlabv1alpha1.PhaseFailed))
		Eventually(up.to("alice@lab.example", "a2"), timeout).Should(HaveLen(1))
		Consistently(up.to("alice@lab.example", "a2"), 3*time.Second).Should(HaveLen(1))
		Expect(up.to("alice@lab.example", "a1")()).To(HaveLen(1))
	})
})
