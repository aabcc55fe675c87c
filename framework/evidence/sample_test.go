package evidence

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func smp(ms int, c map[string]float64) Sample { return Sample{Time: at(ms), Counters: c} }

func TestDeltasBoundaries(t *testing.T) {
	s := []Sample{
		smp(0, map[string]float64{"a": 10}),
		smp(100, map[string]float64{"a": 11}),
		smp(200, map[string]float64{"a": 15}), // from falls here
		smp(300, map[string]float64{"a": 20}),
		smp(400, map[string]float64{"a": 26}), // to falls between 300 and 400
		smp(500, map[string]float64{"a": 100}),
	}
	cases := []struct {
		name     string
		from, to int
		want     float64
	}{
		{"exact samples", 200, 400, 11},
		{"between samples: widened outwards", 250, 350, 11},
		{"from before the first sample", -500, 100, 1},
		{"to after the last sample", 450, 900, 74},
		{"whole", -1, 1000, 90},
	}
	for _, c := range cases {
		got := Deltas(s, at(c.from), at(c.to))
		if got["a"] != c.want {
			t.Errorf("%s: a = %v, want %v", c.name, got["a"], c.want)
		}
	}
	if d := Deltas(s, at(600), at(700)); len(d) != 0 {
		t.Errorf("interval after the last sample: %v, want empty", d)
	}
	if d := Deltas(s, at(-300), at(-100)); len(d) != 0 {
		t.Errorf("interval before the first sample: %v, want empty", d)
	}
	if d := Deltas(s, at(300), at(200)); len(d) != 0 {
		t.Errorf("reversed interval: %v, want empty", d)
	}
	if d := Deltas(s[:1], at(-100), at(100)); len(d) != 0 {
		t.Errorf("one sample: %v, want empty", d)
	}
}

// A process restart resets its counters: the step that goes down counts
// the new value, never a negative increase.
func TestDeltasCounterReset(t *testing.T) {
	s := []Sample{
		smp(0, map[string]float64{"opened": 100, "failed": 7}),
		smp(100, map[string]float64{"opened": 104, "failed": 9}),
		// restarted: zeros are absent, "opened" starts again from 0
		smp(200, map[string]float64{"opened": 3}),
		smp(300, map[string]float64{"opened": 5, "failed": 1}),
	}
	got := Deltas(s, at(0), at(300))
	want := map[string]float64{"opened": 4 + 3 + 2, "failed": 2 + 0 + 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Deltas across a restart = %v, want %v", got, want)
	}
	// Only the part after the restart.
	if got := Deltas(s, at(200), at(300)); got["opened"] != 2 || got["failed"] != 1 {
		t.Fatalf("after the restart = %v, want opened 2, failed 1", got)
	}
}

// Failed samples carry no counters: they are skipped, not read as a reset
// to zero (which would count the whole value again afterwards).
func TestDeltasSkipsFailedSamples(t *testing.T) {
	s := []Sample{
		smp(0, map[string]float64{"a": 50}),
		{Time: at(100), Err: "timeout"},
		{Time: at(200), Err: "timeout"},
		smp(300, map[string]float64{"a": 52}),
	}
	if got := Deltas(s, at(0), at(300)); got["a"] != 2 {
		t.Fatalf("a = %v, want 2 (failed samples skipped)", got["a"])
	}
}

// Samples out of order (two files concatenated, say) are put in order.
func TestDeltasUnsorted(t *testing.T) {
	s := []Sample{
		smp(200, map[string]float64{"a": 30}),
		smp(0, map[string]float64{"a": 10}),
		smp(100, map[string]float64{"a": 20}),
	}
	if got := Deltas(s, at(0), at(200)); got["a"] != 20 {
		t.Fatalf("a = %v, want 20", got["a"])
	}
}

// A counter seen but not increasing is in the result at zero: measured,
// nothing happened.
func TestDeltasKeepsZeroIncrease(t *testing.T) {
	s := []Sample{smp(0, map[string]float64{"a": 5}), smp(100, map[string]float64{"a": 5})}
	got := Deltas(s, at(0), at(100))
	if v, ok := got["a"]; !ok || v != 0 {
		t.Fatalf("got %v, want a: 0 present", got)
	}
}

func TestWriteReadTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.jsonl")
	w, err := createWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{
		smp(0, map[string]float64{"TcpRetransSegs": 3}),
		{Time: at(100), Err: "timeout"},
		smp(200, nil),
	}
	for _, s := range want {
		if err := w.write(s); err != nil {
			t.Fatal(err)
		}
	}
	w.close()
	// A writer killed mid-line leaves a line without its newline.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"t":1800000000300000000,"c":{"TcpRetr`)
	f.Close()

	got, err := ReadFile(path)
	if err != nil {
		t.Fatalf("torn last line: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d samples, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if !got[i].Time.Equal(want[i].Time) || got[i].Err != want[i].Err || !reflect.DeepEqual(got[i].Counters, want[i].Counters) {
			t.Errorf("sample %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// A complete line that is not a sample is corruption, not a kill: it is
// reported with its line number.
func TestReadMalformedLine(t *testing.T) {
	in := `{"t":1,"c":{"a":1}}` + "\n" + `not json` + "\n" + `{"t":3}` + "\n"
	got, err := Read(strings.NewReader(in))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v, want one naming line 2", err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d samples before the bad line, want 1", len(got))
	}
	if _, err := Read(strings.NewReader(`{"c":{"a":1}}` + "\n")); err == nil {
		t.Fatal("a sample without a time was accepted")
	}
}

func TestParseProcNet(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n" +
		"Tcp: 1 200 120000 -1 12 10 2 1 4 900 850 17 0 3 0\n" +
		"Udp: InDatagrams\nUdp: 5\n"
	netstat := "TcpExt: SyncookiesSent TCPTimeouts TCPLossProbes TCPSynRetrans TCPAbortOnTimeout\nTcpExt: 0 6 4 2 0\n" +
		"IpExt: InNoRoutes\nIpExt: 0\n"
	out := map[string]float64{}
	if err := parseProcNet([]byte(snmp), tcpTable, out); err != nil {
		t.Fatal(err)
	}
	if err := parseProcNet([]byte(netstat), tcpExtTable, out); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"TcpActiveOpens": 12, "TcpPassiveOpens": 10, "TcpAttemptFails": 2, "TcpEstabResets": 1,
		"TcpInSegs": 900, "TcpOutSegs": 850, "TcpRetransSegs": 17, "TcpOutRsts": 3,
		"TcpExtTCPTimeouts": 6, "TcpExtTCPLossProbes": 4, "TcpExtTCPSynRetrans": 2,
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("parsed %v\nwant   %v", out, want)
	}
	if err := parseProcNet([]byte("Tcp: A B\nTcp: 1\n"), tcpTable, out); err == nil {
		t.Fatal("a values line shorter than its header was accepted")
	}
	if err := parseProcNet([]byte(snmp), tcpExtTable, out); err == nil {
		t.Fatal("a missing table was not reported")
	}
}
