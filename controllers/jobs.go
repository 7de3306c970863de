package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// The decision loop reads CvlabJobs from an informer of its own that decodes each job on its own.
//
// A job stored under an older version of the CRD, or before it validated the field, may not
// decode into today's types (spec.gpus: "two", spec.timeout: 5). A typed informer fails its whole
// list, and its watch, on the first such job: it then never sees any job again, and a manager
// started later never syncs. One bad object would stop the whole queue. Here a job that does not
// decode is kept with its metadata and status, and the decoding error in the in-memory annotation
// annotationDecodeError (never written back); the loop fails that job (see observe.Job.invalid) and the
// rest of the queue runs. The API server refuses to write such a job's status too (its CRD rules
// cannot evaluate the field), so the Warning event "Finished" is what says why (patchStatus).

// annotationDecodeError holds, on the cached copy only, why a stored job does not decode.
const annotationDecodeError = observe.AnnotationDecodeError

// newJobInformer makes the lenient CvlabJob informer (not started).
func newJobInformer(cfg *rest.Config) (toolscache.SharedIndexInformer, error) {
	s := runtime.NewScheme()
	if err := cvlabv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &cvlabv1alpha1.GroupVersion
	c.APIPath = "/apis"
	c.ContentType = runtime.ContentTypeJSON
	c.AcceptContentTypes = runtime.ContentTypeJSON
	c.NegotiatedSerializer = lenientSerializer{serializer.NewCodecFactory(s).WithoutConversion()}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("CvlabJob client: %w", err)
	}
	params := runtime.NewParameterCodec(s)
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list := &cvlabv1alpha1.CvlabJobList{}
			return list, rc.Get().Resource("cvlabjobs").VersionedParams(&opts, params).Do(ctx).Into(list)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.Watch = true
			return rc.Get().Resource("cvlabjobs").VersionedParams(&opts, params).Watch(ctx)
		},
	}
	inf := toolscache.NewSharedIndexInformer(patientListWatch(lw), &cvlabv1alpha1.CvlabJob{}, 0, toolscache.Indexers{})
	if err := inf.SetTransform(cache.TransformStripManagedFields()); err != nil {
		return nil, err
	}
	return inf, nil
}

// jobInformerRunnable runs the informer on every replica, like the manager's cache, so that a new
// leader starts with it synced.
type jobInformerRunnable struct{ toolscache.SharedIndexInformer }

func (j jobInformerRunnable) Start(ctx context.Context) error {
	j.RunWithContext(ctx)
	return nil
}

func (jobInformerRunnable) NeedLeaderElection() bool { return false }

// listJobs returns the cached jobs themselves, not copies: a decision only reads them (status is
// written from new objects, see patchStatus). Copying 5,000 jobs per decision was most of the
// manager's garbage.
func listJobs(inf toolscache.SharedIndexInformer) []*cvlabv1alpha1.CvlabJob {
	objs := inf.GetStore().List()
	jobs := make([]*cvlabv1alpha1.CvlabJob, 0, len(objs))
	for _, o := range objs {
		if j, ok := o.(*cvlabv1alpha1.CvlabJob); ok {
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// lenientSerializer decodes CvlabJobs and their lists one job at a time (lenientDecoder).
type lenientSerializer struct{ runtime.NegotiatedSerializer }

func (s lenientSerializer) DecoderToVersion(d runtime.Decoder, gv runtime.GroupVersioner) runtime.Decoder {
	return lenientDecoder{s.NegotiatedSerializer.DecoderToVersion(d, gv)}
}

type lenientDecoder struct{ runtime.Decoder }

var jobGVK = cvlabv1alpha1.GroupVersion.WithKind("CvlabJob")

func (d lenientDecoder) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	obj, gvk, err := d.Decoder.Decode(data, defaults, into)
	if err == nil {
		return obj, gvk, nil
	}
	var tm metav1.TypeMeta
	if json.Unmarshal(data, &tm) != nil {
		return obj, gvk, err
	}
	switch tm.Kind {
	case "CvlabJob":
		j, ok := into.(*cvlabv1alpha1.CvlabJob)
		if !ok {
			j = &cvlabv1alpha1.CvlabJob{}
		}
		if keepUndecodable(data, err, j) != nil {
			return obj, gvk, err
		}
		return j, &jobGVK, nil
	case "CvlabJobList":
		var raw struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ListMeta   `json:"metadata"`
			Items           []json.RawMessage `json:"items"`
		}
		if json.Unmarshal(data, &raw) != nil {
			return obj, gvk, err
		}
		list, ok := into.(*cvlabv1alpha1.CvlabJobList)
		if !ok {
			list = &cvlabv1alpha1.CvlabJobList{}
		}
		list.TypeMeta, list.ListMeta, list.Items = raw.TypeMeta, raw.Metadata, make([]cvlabv1alpha1.CvlabJob, len(raw.Items))
		for i, item := range raw.Items {
			if _, _, ierr := d.Decoder.Decode(item, &jobGVK, &list.Items[i]); ierr != nil {
				list.Items[i] = cvlabv1alpha1.CvlabJob{}
				if keepUndecodable(item, ierr, &list.Items[i]) != nil {
					return obj, gvk, err
				}
			}
		}
		listGVK := cvlabv1alpha1.GroupVersion.WithKind("CvlabJobList")
		return list, &listGVK, nil
	}
	return obj, gvk, err
}

// keepUndecodable keeps of a job that does not decode its metadata, its status if that decodes,
// and the error.
func keepUndecodable(data []byte, decodeErr error, j *cvlabv1alpha1.CvlabJob) error {
	var parts struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Status          json.RawMessage   `json:"status"`
	}
	if err := json.Unmarshal(data, &parts); err != nil {
		return err
	}
	*j = cvlabv1alpha1.CvlabJob{TypeMeta: parts.TypeMeta, ObjectMeta: parts.Metadata}
	if len(parts.Status) > 0 {
		_ = json.Unmarshal(parts.Status, &j.Status) // best effort: only the operator writes it
	}
	if j.Annotations == nil {
		j.Annotations = map[string]string{}
	}
	j.Annotations[annotationDecodeError] = decodeErr.Error()
	return nil
}
