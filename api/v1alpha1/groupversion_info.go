// Package v1alpha1 contains the cvlab.epfl.ch/v1alpha1 API: the CvlabJob, one research job that
// the fair-share queue turns into a pod when its turn comes.
// +kubebuilder:object:generate=true
// +groupName=cvlab.epfl.ch
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "cvlab.epfl.ch", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this API to a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
