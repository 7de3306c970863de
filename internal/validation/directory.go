package validation

// DirectoryName is the lab directory ConfigMap as config/default installs it
// (config/policies/lab_directory.yaml with the cvlab-queue- name prefix), in the operator's
// namespace (OperatorNamespace): user name → cluster account (internal/directory). The policy
// cvlab-queue-job-cluster-user checks spec.clusterUser against it; the operator fills the
// clusterUser of jobs that name none from it; `kubectl cvlab submit` shows it.
const DirectoryName = "cvlab-queue-lab-directory"
