// Package kube connects sluice to Kubernetes: pools whose replicas are the
// pods behind a Service, and workloads the autoscaler sizes.
//
//   - Discovery keeps a pool's backends in step with a Service's
//     EndpointSlices, from an informer (one LIST, then a WATCH; no polling).
//     Ready endpoints take traffic, not-ready ones wait as starting, and
//     terminating ones drain.
//   - Workload is the autoscaler's actuator for a Deployment or StatefulSet:
//     it writes the scale subresource and reports the replica count last
//     observed on the workload, including changes made by others.
//   - Elector holds a Lease so that, of several gateway replicas, one at a
//     time runs a pool's autoscaler.
//   - ExternalScaler serves KEDA's external-scaler gRPC interface over
//     sluice's demand signal, for clusters where KEDA actuates instead.
//
// docs/kubernetes.md explains the design and the RBAC it needs.
package kube
