package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions keeps only the pods of CvlabJobs in the manager's informer cache, so that the
// operator's memory does not grow with the cluster's other pods.
func CacheOptions() cache.Options {
	req, err := labels.NewRequirement(LabelJob, selection.Exists, nil)
	utilruntime.Must(err)
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}: {Label: labels.NewSelector().Add(*req)},
	}}
}
