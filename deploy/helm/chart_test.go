package helm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgferry/pgferry/configs"
)

// helmVersion is the Helm release check.sh and these tests build; both
// share the binary through the user cache directory.
const helmVersion = "v4.3.2"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm returns the helm binary: $HELM, or the cached build, or a fresh
// `go install` into the cache (bounded to 10 minutes). A helm that cannot
// be had fails the test: the chart is part of what CI checks.
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv("HELM"); p != "" {
			helmPath = p
			return
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			helmErr = err
			return
		}
		dir := filepath.Join(cache, "pgferry", "helm-"+helmVersion)
		helmPath = filepath.Join(dir, "helm")
		if _, err := os.Stat(helmPath); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", "helm.sh/helm/v4/cmd/helm@"+helmVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			helmErr = fmt.Errorf("build helm %s: %w\n%s", helmVersion, err, out)
		}
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// object is one rendered manifest.
type object map[string]any

// get walks o by keys and list indexes ("spec", "ports", 0, ...).
func (o object) get(path ...any) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func (o object) kind() string { s, _ := o.get("kind").(string); return s }
func (o object) name() string { s, _ := o.get("metadata", "name").(string); return s }

// manifests is a rendered chart.
type manifests []object

func (ms manifests) kinds() []string {
	var ks []string
	for _, o := range ms {
		ks = append(ks, o.kind())
	}
	slices.Sort(ks)
	return ks
}

// one returns the only object of kind (and name, if not empty).
func (ms manifests) one(t *testing.T, kind, name string) object {
	t.Helper()
	var found []object
	for _, o := range ms {
		if o.kind() == kind && (name == "" || o.name() == name) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s %q, have %d (kinds: %v)", kind, name, len(found), ms.kinds())
	}
	return found[0]
}

// render runs helm template on chart with args and decodes the documents.
func render(t *testing.T, chart string, args ...string) manifests {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", "rel", chart, "--namespace", "db"}, args...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, out)
	}
	var ms manifests
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode rendered manifests: %v\n%s", err, out)
		}
		if o != nil {
			ms = append(ms, o)
		}
	}
	return ms
}

func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, helm(t), args...).CombinedOutput()
}

const chart = "pgferry"

// container returns the pgferry container of a pod template spec.
func container(t *testing.T, podSpec object) object {
	t.Helper()
	cs, _ := podSpec.get("containers").([]any)
	for _, c := range cs {
		if m, ok := c.(map[string]any); ok && m["name"] == "pgferry" {
			return m
		}
	}
	t.Fatalf("no pgferry container in %v", podSpec)
	return nil
}

// parseConfig decodes the rendered pgferry.toml the way pgferry does. The
// files the pod would mount (the auth_file) are made in a temp dir, from
// secret when not nil.
func parseConfig(t *testing.T, cm, secret object) *configs.Config {
	t.Helper()
	text, _ := cm.get("data", "pgferry.toml").(string)
	const mount = "/etc/pgferry-secrets/"
	dir := t.TempDir()
	data := map[string]any{"userlist.txt": `"app" "placeholder"`} // a Secret the user creates
	if secret != nil {
		data, _ = secret.get("stringData").(map[string]any)
	}
	for name, content := range data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content.(string)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	local := strings.ReplaceAll(text, mount, dir+"/")
	cfg, _, err := configs.Parse([]byte(local), "toml", func(string) (string, bool) { return "", false })
	if err == nil && strings.HasPrefix(cfg.AuthFile, dir+"/") {
		cfg.AuthFile = mount + strings.TrimPrefix(cfg.AuthFile, dir+"/")
	}
	if err != nil {
		t.Fatalf("pgferry rejects the rendered config: %v\n%s", err, text)
	}
	return cfg
}

func TestChartPassesHelmLintStrict(t *testing.T) {
	for _, args := range [][]string{nil, {"--set", "mode=sidecar"}} {
		if out, err := runHelm(t, append([]string{"lint", "--strict", chart}, args...)...); err != nil {
			t.Errorf("helm lint --strict %v: %v\n%s", args, err, out)
		}
	}
}

func TestChartDefaultsRenderAStandaloneFleet(t *testing.T) {
	ms := render(t, chart)
	want := []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"}
	// No Secret: without authFile.content the pods mount "<fullname>-auth",
	// which the operator creates.
	if got := ms.kinds(); !slices.Equal(got, want) {
		t.Fatalf("kinds = %v, want %v (optional resources must be off by default)", got, want)
	}

	cfg := parseConfig(t, ms.one(t, "ConfigMap", ""), nil)
	if cfg.ListenAddr != "0.0.0.0" || cfg.ListenPort != 6432 || cfg.MetricsListen != "0.0.0.0:9127" {
		t.Errorf("config listens on %s:%d, metrics on %s", cfg.ListenAddr, cfg.ListenPort, cfg.MetricsListen)
	}
	if !cfg.WatchConfig {
		t.Error("watch_config is off in the chart's config")
	}
	// The replicas peer through the headless Service.
	if cfg.PeerID != 1 || cfg.PeersDNS != "rel-pgferry-peers.db.svc" || cfg.PeersPort != 6432 {
		t.Errorf("peering: peer_id %d, peers_dns %q, peers_port %d; want 1, rel-pgferry-peers.db.svc, 6432", cfg.PeerID, cfg.PeersDNS, cfg.PeersPort)
	}
	if cfg.FleetBudgets() {
		t.Error("a fleet budget is set by default")
	}

	dep := ms.one(t, "Deployment", "")
	pod := object(dep.get("spec", "template", "spec").(map[string]any))
	c := container(t, pod)
	ports := map[string]int{}
	for _, p := range c.get("ports").([]any) {
		m := p.(map[string]any)
		ports[m["name"].(string)] = m["containerPort"].(int)
	}
	if ports["postgres"] != cfg.ListenPort || fmt.Sprintf("0.0.0.0:%d", ports["metrics"]) != cfg.MetricsListen {
		t.Errorf("container ports %v do not match the config", ports)
	}
	probes := []struct{ probe, path string }{
		{"livenessProbe", "/healthz"}, {"readinessProbe", "/readyz"}, {"startupProbe", "/readyz"},
	}
	for _, p := range probes {
		if got := c.get(p.probe, "httpGet", "path"); got != p.path {
			t.Errorf("%s path = %v, want %s", p.probe, got, p.path)
		}
		if got := c.get(p.probe, "httpGet", "port"); got != "metrics" {
			t.Errorf("%s port = %v, want metrics", p.probe, got)
		}
	}

	sec := []struct {
		path []any
		want any
	}{
		{[]any{"securityContext", "runAsNonRoot"}, true},
		{[]any{"securityContext", "readOnlyRootFilesystem"}, true},
		{[]any{"securityContext", "allowPrivilegeEscalation"}, false},
		{[]any{"securityContext", "capabilities", "drop", 0}, "ALL"},
		{[]any{"securityContext", "seccompProfile", "type"}, "RuntimeDefault"},
	}
	for _, s := range sec {
		if got := c.get(s.path...); got != s.want {
			t.Errorf("container %v = %v, want %v", s.path, got, s.want)
		}
	}
	if pod.get("securityContext", "runAsNonRoot") != true || pod.get("securityContext", "seccompProfile", "type") != "RuntimeDefault" {
		t.Errorf("pod securityContext = %v", pod.get("securityContext"))
	}

	// Draining: the grace period covers the preStop sleep and shutdown_timeout.
	grace, _ := pod.get("terminationGracePeriodSeconds").(int)
	sleep, _ := c.get("lifecycle", "preStop", "sleep", "seconds").(int)
	if sleep <= 0 {
		t.Errorf("no preStop sleep: %v", c.get("lifecycle"))
	}
	if need := time.Duration(sleep)*time.Second + cfg.ShutdownTimeout.Std(); time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds = %d, must exceed preStop %ds + shutdown_timeout %s", grace, sleep, cfg.ShutdownTimeout)
	}
	// The config is a directory mount: subPath mounts never see updates.
	for _, m := range c.get("volumeMounts").([]any) {
		if _, ok := m.(map[string]any)["subPath"]; ok {
			t.Errorf("volume mount uses subPath: %v", m)
		}
	}
	if got := pod.get("volumes", 1, "secret", "secretName"); got != "rel-pgferry-auth" {
		t.Errorf("auth_file Secret = %v, want rel-pgferry-auth (created by the operator)", got)
	}
	if got := dep.get("spec", "replicas"); got != 2 {
		t.Errorf("replicas = %v, want 2", got)
	}

	peers := ms.one(t, "Service", "rel-pgferry-peers")
	if peers.get("spec", "clusterIP") != "None" || peers.get("spec", "publishNotReadyAddresses") != true {
		t.Errorf("peers Service is not headless over all pods: %v", peers.get("spec"))
	}
	svc := ms.one(t, "Service", "rel-pgferry")
	if svc.get("spec", "ports", 0, "port") != 6432 || svc.get("spec", "ports", 0, "targetPort") != "postgres" {
		t.Errorf("client Service ports = %v", svc.get("spec", "ports"))
	}
	pdb := ms.one(t, "PodDisruptionBudget", "")
	if pdb.get("spec", "maxUnavailable") != 1 {
		t.Errorf("PDB = %v", pdb.get("spec"))
	}
	if pod.get("metadata", "labels", "azure.workload.identity/use") != nil {
		t.Error("workload identity label set by default")
	}
}

func TestChartOptionalResourcesRenderWhenEnabled(t *testing.T) {
	const clientID = "11111111-2222-3333-4444-555555555555"
	ms := render(t, chart,
		"--set", "autoscaling.enabled=true",
		"--set", "serviceMonitor.enabled=true",
		"--set", "podMonitor.enabled=true",
		"--set", "workloadIdentity.enabled=true",
		"--set", "workloadIdentity.clientId="+clientID,
		"--set", `authFile.content="app" "secret"`,
		"--set-json", `config.databases={"orders":{"host":"orders.postgres.database.azure.com","dbname":"orders","user":"orders-api-identity","auth":"entra","entra_credential":"workload_identity","sslmode":"verify-full"}}`,
	)
	for _, k := range []string{"HorizontalPodAutoscaler", "ServiceMonitor", "PodMonitor", "Secret"} {
		ms.one(t, k, "")
	}
	dep := ms.one(t, "Deployment", "")
	if dep.get("spec", "replicas") != nil {
		t.Error("replicas set although the HPA scales the Deployment")
	}
	if got := dep.get("spec", "template", "metadata", "labels", "azure.workload.identity/use"); got != "true" {
		t.Errorf("pod label azure.workload.identity/use = %v", got)
	}
	sa := ms.one(t, "ServiceAccount", "")
	if got := sa.get("metadata", "annotations", "azure.workload.identity/client-id"); got != clientID {
		t.Errorf("ServiceAccount client-id annotation = %v", got)
	}
	if dep.get("spec", "template", "spec", "serviceAccountName") != sa.name() {
		t.Error("the pods do not use the chart's ServiceAccount")
	}
	cfg := parseConfig(t, ms.one(t, "ConfigMap", ""), ms.one(t, "Secret", ""))
	if db := cfg.Databases["orders"]; db.Auth != "entra" || db.Host != "orders.postgres.database.azure.com" {
		t.Errorf("databases.orders = %+v", db)
	}
	if cfg.AuthFile != "/etc/pgferry-secrets/userlist.txt" {
		t.Errorf("auth_file = %q", cfg.AuthFile)
	}
	secret := ms.one(t, "Secret", "")
	if _, ok := secret.get("stringData", "userlist.txt").(string); !ok {
		t.Errorf("Secret has no userlist.txt: %v", secret)
	}
	sm := ms.one(t, "ServiceMonitor", "")
	if sm.get("spec", "selector", "matchLabels", "pgferry.io/peers") != "true" {
		t.Error("the ServiceMonitor should scrape through the headless Service only")
	}

	refused := [][]string{
		{"--set", "workloadIdentity.enabled=true"},
		{"--set", "config.databases=null"},
	}
	for _, args := range refused {
		if out, err := runHelm(t, append([]string{"template", "rel", chart}, args...)...); err == nil {
			t.Errorf("%v rendered:\n%s", args, out)
		}
	}
}

func TestChartSidecarPartialsWorkInAnApplicationChart(t *testing.T) {
	ms := render(t, chart, "--set", "mode=sidecar", "--set", `authFile.content="app" "secret"`)
	if got, want := ms.kinds(), []string{"ConfigMap", "Secret", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Fatalf("sidecar kinds = %v, want %v", got, want)
	}
	if cfg := parseConfig(t, ms.one(t, "ConfigMap", ""), ms.one(t, "Secret", "")); cfg.ListenAddr != "127.0.0.1" {
		t.Errorf("sidecar listen_addr = %q, want 127.0.0.1", cfg.ListenAddr)
	}

	// An application chart with pgferry as a dependency (charts/pgferry)
	// adds the container to its own pod with the chart's partials.
	app := t.TempDir()
	if err := os.CopyFS(filepath.Join(app, "charts", "pgferry"), os.DirFS(chart)); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: orders\nversion: 1.0.0\n",
		"values.yaml": `pgferry:
  mode: sidecar
  workloadIdentity:
    enabled: true
    clientId: abc
  authFile:
    content: '"app" "secret"'
`,
		"templates/deployment.yaml": `{{- $pgferry := dict "Values" .Values.pgferry "Release" .Release "Chart" (dict "Name" "pgferry" "Version" "" "AppVersion" "1.2.3") }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
spec:
  selector:
    matchLabels: {app: orders}
  template:
    metadata:
      labels:
        app: orders
        {{- include "pgferry.sidecar.podLabels" $pgferry | nindent 8 }}
    spec:
      serviceAccountName: {{ include "pgferry.serviceAccountName" $pgferry }}
      terminationGracePeriodSeconds: {{ include "pgferry.terminationGracePeriodSeconds" $pgferry }}
      initContainers:
        {{- include "pgferry.sidecar.container" $pgferry | nindent 8 }}
          restartPolicy: Always
      containers:
        - name: app
          image: orders:1
      volumes:
        {{- include "pgferry.sidecar.volumes" $pgferry | nindent 8 }}
`,
	}
	for name, text := range files {
		p := filepath.Join(app, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ms = render(t, app)
	dep := ms.one(t, "Deployment", "orders")
	pod := object(dep.get("spec", "template", "spec").(map[string]any))
	init := object(pod.get("initContainers", 0).(map[string]any))
	if init.get("name") != "pgferry" || init.get("restartPolicy") != "Always" {
		t.Fatalf("pgferry is not a native sidecar: %v", init)
	}
	if init.get("image") != "ghcr.io/pgferry/pgferry:1.2.3" {
		t.Errorf("image = %v", init.get("image"))
	}
	if init.get("readinessProbe", "httpGet", "path") != "/readyz" || init.get("livenessProbe", "httpGet", "path") != "/healthz" {
		t.Errorf("sidecar probes: %v / %v", init.get("readinessProbe"), init.get("livenessProbe"))
	}
	if init.get("securityContext", "readOnlyRootFilesystem") != true {
		t.Error("sidecar securityContext missing")
	}
	var vols []string
	for _, v := range pod.get("volumes").([]any) {
		vols = append(vols, v.(map[string]any)["name"].(string))
	}
	if !slices.Equal(vols, []string{"pgferry-config", "pgferry-auth"}) {
		t.Errorf("volumes = %v", vols)
	}
	if dep.get("spec", "template", "metadata", "labels", "azure.workload.identity/use") != "true" {
		t.Error("the application pod lacks the workload identity label")
	}
	// The parent renders the subchart's ConfigMap, Secret and ServiceAccount.
	cm := ms.one(t, "ConfigMap", "")
	if want := pod.get("volumes", 0, "configMap", "name"); cm.name() != want {
		t.Errorf("volume names ConfigMap %v, chart renders %s", want, cm.name())
	}
	if sa := ms.one(t, "ServiceAccount", ""); sa.name() != pod.get("serviceAccountName") {
		t.Errorf("pod uses ServiceAccount %v, chart renders %s", pod.get("serviceAccountName"), sa.name())
	}
	if !strings.Contains(cm.get("data", "pgferry.toml").(string), `listen_addr = "127.0.0.1"`) {
		t.Error("sidecar config does not listen on loopback")
	}
}

func TestChartSharesAFleetBudgetAmongItsReplicas(t *testing.T) {
	ms := render(t, chart, "--set", "fleet.maxDBConnections=120", "--set", "fleet.interval=2s")
	cfg := parseConfig(t, ms.one(t, "ConfigMap", ""), nil)
	if cfg.FleetMaxDBConnections != 120 || cfg.FleetInterval.Std() != 2*time.Second || cfg.PeersDNS == "" {
		t.Errorf("fleet_max_db_connections %d, fleet_interval %s, peers_dns %q; want 120, 2s, the peers Service",
			cfg.FleetMaxDBConnections, cfg.FleetInterval, cfg.PeersDNS)
	}
	out, err := runHelm(t, "template", "rel", chart, "--set", "fleet.maxDBConnections=120", "--set", "peering.enabled=false")
	if err == nil || !strings.Contains(string(out), "need mode standalone") {
		t.Errorf("a fleet budget without peering rendered (%v):\n%s", err, out)
	}
}
