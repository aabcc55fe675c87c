package measure

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestRadius(t *testing.T) {
	flow := func(id, client, clientNode, server, serverNode string, affected bool) FlowSummary {
		return FlowSummary{Flow: FlowMeta{ID: id, Client: client, ClientNode: clientNode, Server: server, ServerNode: serverNode}, Affected: affected}
	}
	for _, tc := range []struct {
		name  string
		flows []FlowSummary
		want  BlastRadius
	}{
		{
			name: "dedup and sort across affected flows",
			flows: []FlowSummary{
				flow("f3", "c2", "n1", "s1", "n2", true),
				flow("f1", "c1", "n1", "s1", "n2", true),
				flow("f2", "c3", "n3", "s3", "n4", false),
				flow("f4", "s1", "n2", "", "", true), // server unknown
			},
			want: BlastRadius{Flows: []string{"f1", "f3", "f4"}, Pods: []string{"c1", "c2", "s1"}, Nodes: []string{"n1", "n2"}},
		},
		{
			name:  "nothing affected",
			flows: []FlowSummary{flow("f1", "c1", "n1", "s1", "n2", false)},
			want:  BlastRadius{Flows: []string{}, Pods: []string{}, Nodes: []string{}},
		},
		{
			name: "no flows",
			want: BlastRadius{Flows: []string{}, Pods: []string{}, Nodes: []string{}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Radius(tc.flows); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	sec := time.Second
	win := window(10 * sec)
	fault := &Fault{Name: "blackhole", Inject: at(4 * sec), Recover: at(5 * sec)}
	clean := gen(200, 0, 10*sec, nil)
	disrupted := gen(200, 0, 10*sec, hole(4*sec, 5500*time.Millisecond, events.ClassTimeout))
	analyze := func(id string, control bool, evs []events.Event) FlowSummary {
		meta := FlowMeta{ID: id, Client: id + "-c", Server: id + "-s", ClientNode: "n1", ServerNode: "n2", QPS: 200, Control: control}
		return AnalyzeFlow(meta, evs, win, fault, Options{})
	}

	t.Run("disrupted control is noisy", func(t *testing.T) {
		tr := Summarize([]FlowSummary{analyze("victim", false, disrupted), analyze("ctl", true, disrupted)})
		if !tr.Noisy || len(tr.NoisyReasons) != 1 {
			t.Fatalf("noisy=%v reasons=%q, want noisy with one reason", tr.Noisy, tr.NoisyReasons)
		}
		if r := tr.NoisyReasons[0]; !strings.Contains(r, "ctl") || !strings.Contains(r, "1.500s") {
			t.Errorf("reason %q should name the flow and its 1.500s disruption", r)
		}
		if want := []string{"ctl", "victim"}; !reflect.DeepEqual(tr.Radius.Flows, want) {
			t.Errorf("radius flows %v, want %v", tr.Radius.Flows, want)
		}
	})
	t.Run("clean control is not noisy", func(t *testing.T) {
		tr := Summarize([]FlowSummary{analyze("victim", false, disrupted), analyze("ctl", true, clean)})
		if tr.Noisy || len(tr.NoisyReasons) != 0 || tr.NoisyReasons == nil {
			t.Errorf("noisy=%v reasons=%#v, want clean with empty reasons", tr.Noisy, tr.NoisyReasons)
		}
		want := BlastRadius{Flows: []string{"victim"}, Pods: []string{"victim-c", "victim-s"}, Nodes: []string{"n1", "n2"}}
		if !reflect.DeepEqual(tr.Radius, want) {
			t.Errorf("radius %+v, want %+v", tr.Radius, want)
		}
		if len(tr.Flows) != 2 {
			t.Errorf("trial has %d flows, want 2", len(tr.Flows))
		}
	})
	t.Run("one late answer on the control flow is tolerated", func(t *testing.T) {
		late := gen(200, 0, 10*sec, nil)
		late[1400].Latency = int64(300 * time.Millisecond)
		ctl := analyze("ctl", true, late)
		if ctl.Slow != 1 || len(ctl.Outages) != 1 {
			t.Fatalf("control flow: slow %d outages %d, want one of each", ctl.Slow, len(ctl.Outages))
		}
		if tr := Summarize([]FlowSummary{ctl}); tr.Noisy {
			t.Errorf("one late request made the trial noisy: %v", tr.NoisyReasons)
		}
		late[1401].Latency = int64(300 * time.Millisecond)
		if tr := Summarize([]FlowSummary{analyze("ctl", true, late)}); !tr.Noisy {
			t.Error("two late requests on the control flow should make the trial noisy")
		}
	})
	t.Run("control disrupted outside the fault period is still noisy", func(t *testing.T) {
		tr := Summarize([]FlowSummary{analyze("ctl", true, gen(200, 0, 10*sec, hole(sec, 2*sec, events.ClassReset)))})
		if !tr.Noisy {
			t.Error("a control outage anywhere in the window should make the trial noisy")
		}
	})
}

func TestJSONNames(t *testing.T) {
	s := AnalyzeFlow(FlowMeta{ID: "f", QPS: 100}, gen(100, 0, 3*time.Second, hole(time.Second, 2*time.Second, events.ClassReset)),
		window(3*time.Second), nil, Options{})
	b, err := json.Marshal(Summarize([]FlowSummary{s}))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{
		`"flows":`, `"radius":`, `"noisy":`, `"noisyReasons":[]`, `"flow":`, `"clientNode":`, `"disruptionSeconds":1`,
		`"byClass":{"reset":100}`, `"outages":[{"start":`, `"class":"reset"`, `"latency":{"before":{"count":`,
		`"p99Ms":`, `"streams":{"broken":0`, `"reconnectSeconds":[]`, `"timeline":[{"offset":0,`, `"affected":true`,
	} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s:\n%s", key, b[:min(len(b), 600)])
		}
	}
}
