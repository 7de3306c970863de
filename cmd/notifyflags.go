package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// notifyFlags are the flags of personal notifications (issue 16, docs/notifications.md).
type notifyFlags struct {
	kinds         string
	startedAfter  time.Duration
	deadlineShare float64
	maxAge        time.Duration

	smtpURL, smtpFrom, smtpStartTLS, secret string
	slackURL, mattermostURL, webhookURL     string
	mattermostUsername                      string
	dashboardURL                            string
	groupWindow                             time.Duration
	userLimit                               int
}

// defaultNotifyKinds are the lab's defaults: the moments the rule says an owner must hear of
// (preempted), and those that cost the lab GPUs or the owner work (idle, failed, near timeout).
var defaultNotifyKinds = []notify.Kind{notify.KindPreempted, notify.KindGPUIdle, notify.KindFailed, notify.KindDeadlineSoon}

func (f *notifyFlags) bind(fs *flag.FlagSet) {
	var names []string
	for _, k := range defaultNotifyKinds {
		names = append(names, string(k))
	}
	fs.StringVar(&f.kinds, "notify", strings.Join(names, ","),
		"The moments owners are told about personally unless a job's spec.notify says otherwise: a comma-separated list of Preempted, GPUIdle, Failed, DeadlineSoon, Started, Succeeded; or None.")
	fs.DurationVar(&f.startedAfter, "notify-started-after", 30*time.Minute, "Started is told only after a wait at least this long.")
	fs.Float64Var(&f.deadlineShare, "notify-deadline-soon", 0.2,
		"DeadlineSoon is told when this share of a job's spec.timeout is left (0.2: at 80% of its time, Slurm's TIME_LIMIT_80).")
	fs.DurationVar(&f.maxAge, "notify-max-age", 24*time.Hour,
		"What happened longer ago than this is not told any more (after the manager was down that long); at most 7 days, the sent record's retention.")
	fs.StringVar(&f.smtpURL, "smtp-url", "", "Mail server for email notifications: smtp://host[:port] (STARTTLS per --smtp-starttls, port 587 by default) or smtps://host[:port]. Empty: no email.")
	fs.StringVar(&f.smtpFrom, "smtp-from", "", "Sender of email notifications, such as \"cvlab-queue <queue@lab.example>\".")
	fs.StringVar(&f.smtpStartTLS, "smtp-starttls", "mandatory", "STARTTLS on smtp://: mandatory (never send in clear), opportunistic, or none (a local mail catcher).")
	fs.StringVar(&f.secret, "notify-secret", "cvlab-queue-notify",
		"Secret in the operator's namespace with the notifications' credentials, each key optional: username and password (the mail server's), slack-webhook-url, mattermost-webhook-url (these URLs are secrets: whoever has one can post to the channel). The flags, when given, win. The manager may read only this name (config/rbac/notifications_role.yaml).")
	fs.StringVar(&f.slackURL, "slack-webhook-url", "", "Slack incoming webhook of the lab's channel (or key slack-webhook-url of --notify-secret); owners with slack= in the lab directory are mentioned there.")
	fs.StringVar(&f.mattermostURL, "mattermost-webhook-url", "", "Mattermost incoming webhook of the lab's channel (or key mattermost-webhook-url of --notify-secret); owners with mattermost= in the lab directory are mentioned there.")
	fs.StringVar(&f.mattermostUsername, "mattermost-username", "", "The name Mattermost posts appear under, if the webhook allows overriding it.")
	fs.StringVar(&f.webhookURL, "notify-webhook", "", "URL that receives a JSON POST for every notification of every user (`kind` says which; Slack-compatible `text`), for the lab's own programs.")
	fs.StringVar(&f.dashboardURL, "dashboard-url", "", "Address of the queue dashboard as users reach it, linked from messages.")
	fs.DurationVar(&f.groupWindow, "notify-group-window", notify.DefaultGroupWindow, "A user's events within this window go out as one message (\"3 of your jobs were preempted\").")
	fs.IntVar(&f.userLimit, "notify-user-limit", notify.DefaultUserLimit, "Most messages per hour a user gets on each channel; more events wait and go out as one digest.")
}

// parseKinds reads --notify.
func parseKinds(s string) ([]notify.Kind, error) {
	var kinds []notify.Kind
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		switch {
		case w == "":
		case strings.EqualFold(w, string(cvlabv1alpha1.NotifyNone)):
			return nil, nil
		default:
			i := slices.IndexFunc(notify.Kinds, func(k notify.Kind) bool { return strings.EqualFold(string(k), w) })
			if i < 0 {
				return nil, fmt.Errorf("--notify: %q is not one of Preempted, GPUIdle, Failed, DeadlineSoon, Started, Succeeded, None", w)
			}
			kinds = append(kinds, notify.Kinds[i])
		}
	}
	return kinds, nil
}

// config reads the flags into the dispatcher's and the watcher's settings; enabled is false when
// no channel is configured (no notifications at all).
func (f *notifyFlags) config(ctx context.Context, reader client.Reader, namespace string, idle observe.IdleSettings) (cfg notify.Config, due notify.DueSettings, enabled bool, err error) {
	kinds, err := parseKinds(f.kinds)
	if err != nil {
		return cfg, due, false, err
	}
	if f.deadlineShare < 0 || f.deadlineShare >= 1 {
		return cfg, due, false, fmt.Errorf("--notify-deadline-soon must be in [0, 1), got %v", f.deadlineShare)
	}
	if f.maxAge <= 0 || f.maxAge > notify.DefaultRetention {
		return cfg, due, false, fmt.Errorf("--notify-max-age must be in (0, %s]", notify.DefaultRetention)
	}
	var secret map[string][]byte
	if f.secret != "" {
		var sec corev1.Secret
		switch err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: f.secret}, &sec); {
		case err == nil:
			secret = sec.Data
		case apierrors.IsNotFound(err):
		default:
			return cfg, due, false, fmt.Errorf("--notify-secret %s/%s: %w", namespace, f.secret, err)
		}
	}
	or := func(flag, key string) string {
		if flag != "" {
			return flag
		}
		return string(secret[key])
	}
	cfg = notify.Config{SlackWebhookURL: or(f.slackURL, "slack-webhook-url"), MattermostWebhookURL: or(f.mattermostURL, "mattermost-webhook-url"), MattermostUsername: f.mattermostUsername,
		WebhookURL: f.webhookURL, DashboardURL: f.dashboardURL, GroupWindow: f.groupWindow, UserLimit: f.userLimit}
	if f.smtpURL != "" {
		if f.smtpFrom == "" {
			return cfg, due, false, fmt.Errorf("--smtp-url needs --smtp-from")
		}
		cfg.SMTP = &notify.SMTPConfig{URL: f.smtpURL, From: f.smtpFrom, StartTLS: f.smtpStartTLS,
			Username: string(secret["username"]), Password: string(secret["password"])}
	}
	due = notify.DueSettings{Defaults: kinds, StartedAfter: f.startedAfter, DeadlineShare: f.deadlineShare, MaxAge: f.maxAge,
		IdleThreshold: idle.Threshold, IdleAction: string(idle.Action), IdleAfter: idle.After, IdleGrace: idle.Grace}
	return cfg, due, cfg.Enabled(), nil
}
