package controllers

import (
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// TestStatusEqual checks statusEqual against equality.Semantic.DeepEqual: equal copies are equal,
// and changing any one field of the status, or of one of its conditions, makes them differ. A
// field added to the API and forgotten in statusEqual fails here.
func TestStatusEqual(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC))
	i32 := func(n int32) *int32 { return &n }
	full := func() *cvlabv1alpha1.CvlabJobStatus {
		return &cvlabv1alpha1.CvlabJobStatus{
			Phase: cvlabv1alpha1.PhaseRunning, QueuePosition: i32(3), Rank: i32(7), UserGPUs: "2", PodName: "j-1",
			Admissions: 1, Preemptions: 1, AdmittedAt: &t0, StartTime: &t0, CompletionTime: &t0, Message: "m",
			ObservedGeneration: 2, BackoffUntil: &t0, IdleSince: &t0,
			LastEviction:   &cvlabv1alpha1.Eviction{Reason: cvlabv1alpha1.EvictionPreempted, Preemptor: "ns/p", PreemptorUser: "u", Node: "n", Admission: 1, Time: t0},
			GPUUtilization: &cvlabv1alpha1.GPUUtilization{Percent: 40, MemoryUsedMiB: 100, Window: metav1.Duration{Duration: time.Minute}, MeasuredAt: t0},
			Conditions:     []metav1.Condition{{Type: "Running", Status: metav1.ConditionTrue, Reason: "R", Message: "m", ObservedGeneration: 2, LastTransitionTime: t0}},
		}
	}
	check := func(name string, a, b *cvlabv1alpha1.CvlabJobStatus) {
		t.Helper()
		if got, want := statusEqual(a, b), equality.Semantic.DeepEqual(a, b); got != want {
			t.Errorf("%s: statusEqual = %v, equality.Semantic.DeepEqual = %v", name, got, want)
		}
		if statusEqual(a, b) {
			t.Errorf("%s: a change of this field is not seen", name)
		}
	}
	if a := full(); !statusEqual(a, a.DeepCopy()) {
		t.Fatal("a status differs from its copy")
	}
	if !statusEqual(&cvlabv1alpha1.CvlabJobStatus{}, &cvlabv1alpha1.CvlabJobStatus{}) {
		t.Fatal("two empty statuses differ")
	}
	// Every field of the status, then every field of a condition, set to another value (or nil).
	st := reflect.TypeOf(cvlabv1alpha1.CvlabJobStatus{})
	for i := range st.NumField() {
		f := st.Field(i)
		if f.Name == "Conditions" {
			continue
		}
		b := full()
		v := reflect.ValueOf(b).Elem().Field(i)
		switch v.Kind() {
		case reflect.Pointer:
			v.Set(reflect.Zero(v.Type()))
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int32, reflect.Int64:
			v.SetInt(v.Int() + 1)
		default:
			t.Fatalf("field %s of kind %s: teach this test (and statusEqual) about it", f.Name, v.Kind())
		}
		check(f.Name, full(), b)
		if v.Kind() == reflect.Pointer { // and nil the other way round
			check(f.Name+" (nil first)", b, full())
		}
	}
	et := reflect.TypeOf(cvlabv1alpha1.Eviction{})
	for i := range et.NumField() {
		f := et.Field(i)
		b := full()
		v := reflect.ValueOf(b.LastEviction).Elem().Field(i)
		switch {
		case f.Name == "Time":
			b.LastEviction.Time = metav1.NewTime(t0.Add(time.Second))
		case v.Kind() == reflect.String:
			v.SetString(v.String() + "x")
		case v.Kind() == reflect.Int32:
			v.SetInt(v.Int() + 1)
		default:
			t.Fatalf("eviction field %s of kind %s: teach this test (and evictionEqual) about it", f.Name, v.Kind())
		}
		check("LastEviction."+f.Name, full(), b)
	}
	ct := reflect.TypeOf(metav1.Condition{})
	for i := range ct.NumField() {
		f := ct.Field(i)
		b := full()
		v := reflect.ValueOf(&b.Conditions[0]).Elem().Field(i)
		switch {
		case f.Name == "LastTransitionTime":
			b.Conditions[0].LastTransitionTime = metav1.NewTime(t0.Add(time.Second))
		case v.Kind() == reflect.String:
			v.SetString(v.String() + "x")
		case v.Kind() == reflect.Int64:
			v.SetInt(v.Int() + 1)
		default:
			t.Fatalf("condition field %s of kind %s: teach this test (and statusEqual) about it", f.Name, v.Kind())
		}
		check("Conditions[0]."+f.Name, full(), b)
	}
	b := full()
	b.Conditions = append(b.Conditions, b.Conditions[0])
	check("one condition more", full(), b)
}
