package controllers

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// A list with a job that no longer decodes still decodes: the others fully, that one with its
// metadata, its status and the error.
func TestLenientDecoder(t *testing.T) {
	s := runtime.NewScheme()
	if err := cvlabv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	codecs := lenientSerializer{serializer.NewCodecFactory(s).WithoutConversion()}
	info, _ := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), runtime.ContentTypeJSON)
	dec := codecs.DecoderToVersion(info.Serializer, cvlabv1alpha1.GroupVersion)

	item := func(name, gpus string) string {
		return fmt.Sprintf(`{"apiVersion":"cvlab.epfl.ch/v1alpha1","kind":"CvlabJob","metadata":{"name":%q,"namespace":"lab","uid":"u-%s"},`+
			`"spec":{"user":"alice","image":"img","gpus":%s},"status":{"phase":"Queued"}}`, name, name, gpus)
	}
	cases := map[string]struct {
		data      string
		into      runtime.Object
		wantNames []string
		wantBad   map[string]string // name → part of the decoding error
	}{
		"a list with one bad job": {
			data: `{"apiVersion":"cvlab.epfl.ch/v1alpha1","kind":"CvlabJobList","metadata":{"resourceVersion":"42"},"items":[` +
				item("good", "1") + "," + item("bad", `"two"`) + "]}",
			into: &cvlabv1alpha1.CvlabJobList{}, wantNames: []string{"good", "bad"}, wantBad: map[string]string{"bad": "spec.gpus"},
		},
		"a bad job alone (a watch event)": {
			data: item("bad", `"two"`), wantNames: []string{"bad"}, wantBad: map[string]string{"bad": "spec.gpus"},
		},
		"a good job": {data: item("good", "2"), wantNames: []string{"good"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			obj, _, err := dec.Decode([]byte(tc.data), nil, tc.into)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			var jobs []cvlabv1alpha1.CvlabJob
			switch o := obj.(type) {
			case *cvlabv1alpha1.CvlabJobList:
				jobs = o.Items
				if o.ResourceVersion != "42" {
					t.Errorf("list resourceVersion %q", o.ResourceVersion)
				}
			case *cvlabv1alpha1.CvlabJob:
				jobs = []cvlabv1alpha1.CvlabJob{*o}
			default:
				t.Fatalf("decoded a %T", obj)
			}
			if len(jobs) != len(tc.wantNames) {
				t.Fatalf("%d jobs, want %d", len(jobs), len(tc.wantNames))
			}
			for i, j := range jobs {
				if j.Name != tc.wantNames[i] || j.Namespace != "lab" || j.Status.Phase != cvlabv1alpha1.PhaseQueued {
					t.Errorf("job %d: %s/%s phase %q", i, j.Namespace, j.Name, j.Status.Phase)
				}
				got := j.Annotations[annotationDecodeError]
				if want, bad := tc.wantBad[j.Name]; bad != (got != "") || bad && !strings.Contains(got, want) {
					t.Errorf("job %s: decode error %q, want one mentioning %q", j.Name, got, want)
				}
				if _, bad := tc.wantBad[j.Name]; !bad && j.Spec.GPUs == 0 {
					t.Errorf("job %s: spec not decoded", j.Name)
				}
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	cases := map[string]struct {
		err  error
		want bool
	}{
		"connection refused":  {err: fmt.Errorf("dial: %w", syscall.ECONNREFUSED), want: true},
		"service unavailable": {err: apierrors.NewServiceUnavailable("starting"), want: true},
		"server timeout":      {err: apierrors.NewServerTimeout(gr, "list", 1), want: true},
		"forbidden":           {err: apierrors.NewForbidden(gr, "x", errors.New("no")), want: false},
		"not found":           {err: apierrors.NewNotFound(gr, "x"), want: false},
		"gone (too old)":      {err: apierrors.NewResourceExpired("too old"), want: false},
	}
	for name, tc := range cases {
		if got := unreachable(tc.err); got != tc.want {
			t.Errorf("%s: unreachable = %v, want %v", name, got, tc.want)
		}
	}
}
