package daemon

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fanguard/fanguard/fan"
)

// TestAnswerQueueTurns: answers are written in turns across uids, each
// uid's in the order they came; a uid with one answer waits for at most
// one answer of each other uid.
func TestAnswerQueueTurns(t *testing.T) {
	var q answerQueue
	push := func(uid uint32, fd int32) { q.push(uid, pendingAnswer{ev: fan.Event{Fd: fd}}) }
	for fd := int32(1); fd <= 6; fd++ {
		push(65534, fd) // a flood
	}
	push(0, 100)
	push(1000, 200)
	push(1000, 201)
	var got []int32
	for i := 0; i < 3; i++ { // a few written; then more come
		a, _ := q.pop()
		got = append(got, a.ev.Fd)
	}
	push(0, 101)
	for {
		a, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, a.ev.Fd)
	}
	want := []int32{1, 100, 200, 2, 201, 101, 3, 4, 5, 6}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if q.n != 0 || len(q.ring) != 0 {
		t.Errorf("after all: n %d, ring %d", q.n, len(q.ring))
	}
}

// BenchmarkAnswerQueue: pushing and popping an answer allocates nothing
// once the queues have grown.
func BenchmarkAnswerQueue(b *testing.B) {
	var q answerQueue
	a := pendingAnswer{ev: fan.Event{Fd: 3}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.push(uint32(i%3), a)
		q.push(uint32(i%5), a)
		q.pop()
		q.pop()
	}
}

func TestAnswerQueueAllocs(t *testing.T) {
	res := testing.Benchmark(BenchmarkAnswerQueue)
	if a := res.AllocsPerOp(); a != 0 {
		t.Errorf("answer queue allocates %d times per answer, want 0", a)
	}
}
