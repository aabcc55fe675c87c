// Package manifests holds the Kubernetes objects of the kind and kubeconfig
// providers as embedded YAML (one file per component) and renders a trial's
// objects from them: Render decodes the YAML strictly into the API types,
// sets names, namespace, image, nodes, replicas and arguments on the typed
// objects, and returns them as unstructured objects ready for server-side
// apply. Nothing is templated as text: a field that does not exist in the
// API fails decoding, not the cluster. The embedded provider needs none of it.
package manifests
