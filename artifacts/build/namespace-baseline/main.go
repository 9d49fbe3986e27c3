// Command namespace-baseline gives every namespace the cluster's baseline, including namespaces created
// after apply: it watches Namespaces (and the baseline's own objects in them) and server-side applies the
// baseline objects read from a file, the ConfigMap hardened-cluster renders from the same templates as the
// spec's namespaces. Namespaces listed in the exclude file are left alone.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

const fieldManager = "namespace-baseline"

// object is one baseline object: its kind, name and the JSON sent as the apply patch (namespace set per target).
type object struct {
	kind, name string
	body       map[string]any
}

// readBaseline parses the baseline: Namespace (its labels), ServiceAccount and NetworkPolicy objects
// without a namespace; any other kind is refused, since the ClusterRole grants nothing else.
func readBaseline(path string) ([]object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	decoder := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []object
	for {
		var doc map[string]any
		if err := decoder.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if doc == nil {
			continue
		}
		kind, _ := doc["kind"].(string)
		meta, _ := doc["metadata"].(map[string]any)
		if meta == nil {
			return nil, fmt.Errorf("%s: a %s without metadata", path, kind)
		}
		if _, set := meta["namespace"]; set {
			return nil, fmt.Errorf("%s: %s %v names a namespace; the baseline is applied to each", path, kind, meta["name"])
		}
		name, _ := meta["name"].(string)
		switch kind {
		case "Namespace":
			if name != "" {
				return nil, fmt.Errorf("%s: the Namespace entry carries labels only, not a name", path)
			}
		case "ServiceAccount", "NetworkPolicy":
			if name == "" {
				return nil, fmt.Errorf("%s: a %s without a name", path, kind)
			}
		default:
			return nil, fmt.Errorf("%s: kind %q is not part of a namespace baseline", path, kind)
		}
		out = append(out, object{kind, name, doc})
	}
}

func readExcluded(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, line := range strings.Fields(string(data)) {
		out[line] = true
	}
	return out, nil
}

type controller struct {
	client   kubernetes.Interface
	baseline []object
	excluded map[string]bool
	names    map[string]map[string]bool // kind -> names of the baseline's objects
	queue    workqueue.TypedRateLimitingInterface[string]
	nsLister cache.Indexer
}

// apply puts every baseline object into namespace ns. Force: the baseline wins over a hand edit.
func (c *controller) apply(ctx context.Context, ns string) error {
	force := true
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: &force}
	for _, o := range c.baseline {
		body := map[string]any{}
		for k, v := range o.body {
			body[k] = v
		}
		meta := map[string]any{}
		for k, v := range o.body["metadata"].(map[string]any) {
			meta[k] = v
		}
		body["metadata"] = meta
		if o.kind == "Namespace" {
			meta["name"] = ns
		} else {
			meta["namespace"] = ns
		}
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		switch o.kind {
		case "Namespace":
			_, err = c.client.CoreV1().Namespaces().Patch(ctx, ns, types.ApplyPatchType, data, opts)
		case "ServiceAccount":
			_, err = c.client.CoreV1().ServiceAccounts(ns).Patch(ctx, o.name, types.ApplyPatchType, data, opts)
		case "NetworkPolicy":
			_, err = c.client.NetworkingV1().NetworkPolicies(ns).Patch(ctx, o.name, types.ApplyPatchType, data, opts)
		}
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", o.kind, ns, o.name, err)
		}
	}
	return nil
}

// managed: a namespace that exists, is not being deleted and is not excluded.
func (c *controller) managed(ns string) bool {
	if c.excluded[ns] {
		return false
	}
	item, exists, err := c.nsLister.GetByKey(ns)
	if err != nil || !exists {
		return false
	}
	return item.(*corev1.Namespace).DeletionTimestamp == nil
}

func (c *controller) work(ctx context.Context) {
	for {
		ns, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		if c.managed(ns) {
			if err := c.apply(ctx, ns); err != nil {
				log.Printf("namespace %s: %v (retrying)", ns, err)
				c.queue.AddRateLimited(ns)
			} else {
				c.queue.Forget(ns)
			}
		}
		c.queue.Done(ns)
	}
}

// onObject enqueues the namespace of a baseline object that changed or was deleted.
func (c *controller) onObject(kind string) cache.ResourceEventHandler {
	enqueue := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if m, err := metaOf(obj); err == nil && c.names[kind][m.GetName()] {
			c.queue.Add(m.GetNamespace())
		}
	}
	return cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}
}

func metaOf(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("not an object: %T", obj)
	}
	return m, nil
}

func main() {
	baselinePath := flag.String("baseline", "/etc/namespace-baseline/baseline.yaml", "the baseline objects")
	excludePath := flag.String("exclude", "/etc/namespace-baseline/exclude", "namespaces left alone, one a line")
	resync := flag.Duration("resync", 10*time.Minute, "how often every namespace is applied again")
	flag.Parse()

	baseline, err := readBaseline(*baselinePath)
	if err != nil {
		log.Fatal(err)
	}
	excluded, err := readExcluded(*excludePath)
	if err != nil {
		log.Fatal(err)
	}
	config, err := rest.InClusterConfig()
	if err != nil {
		log.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		log.Fatal(err)
	}
	names := map[string]map[string]bool{}
	for _, o := range baseline {
		if names[o.kind] == nil {
			names[o.kind] = map[string]bool{}
		}
		names[o.kind][o.name] = true
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	factory := informers.NewSharedInformerFactory(client, *resync)
	namespaces := factory.Core().V1().Namespaces().Informer()
	c := &controller{client: client, baseline: baseline, excluded: excluded, names: names,
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		nsLister: namespaces.GetIndexer()}
	enqueueNamespace := func(obj any) {
		if m, err := metaOf(obj); err == nil {
			c.queue.Add(m.GetName())
		}
	}
	// Update covers the periodic resync and a label removed by hand.
	if _, err := namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNamespace,
		UpdateFunc: func(_, obj any) { enqueueNamespace(obj) },
	}); err != nil {
		log.Fatal(err)
	}
	watched := []cache.SharedIndexInformer{namespaces}
	if names["NetworkPolicy"] != nil {
		policies := factory.Networking().V1().NetworkPolicies().Informer()
		if _, err := policies.AddEventHandler(c.onObject("NetworkPolicy")); err != nil {
			log.Fatal(err)
		}
		watched = append(watched, policies)
	}
	if names["ServiceAccount"] != nil {
		accounts := factory.Core().V1().ServiceAccounts().Informer()
		if _, err := accounts.AddEventHandler(c.onObject("ServiceAccount")); err != nil {
			log.Fatal(err)
		}
		watched = append(watched, accounts)
	}
	factory.Start(ctx.Done())
	synced := make([]cache.InformerSynced, 0, len(watched))
	for _, i := range watched {
		synced = append(synced, i.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		log.Fatal("informer caches did not sync")
	}
	log.Printf("baseline of %d objects for every namespace but %d excluded", len(baseline), len(excluded))
	go c.work(ctx)
	<-ctx.Done()
	c.queue.ShutDown()
	factory.Shutdown()
}
