package strata

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func withCode(c codes.Code, code string) failure {
	md := metadata.MD{}
	if code != "" {
		md.Set(ErrorCodeHeader, code)
	}
	return failure{status: status.New(c, "x"), md: md}
}

func TestWritesRetryOnlyWhenCertainlyNotApplied(t *testing.T) {
	cases := []struct {
		f    failure
		want bool
	}{
		{withCode(codes.Unavailable, CodeNotLeader), true},
		{withCode(codes.Unavailable, CodeLeaderUnreachable), true},
		{withCode(codes.DeadlineExceeded, CodeOutcomeUnknown), false},
		{withCode(codes.Unavailable, CodeShuttingDown), false},
		{withCode(codes.Unavailable, CodeNoQuorum), false},
		{failure{status: status.New(codes.Unavailable, "error reading from server: EOF")}, false},
		{failure{status: status.New(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)}, true},
		{failure{status: status.New(codes.DeadlineExceeded, "context deadline exceeded")}, false},
	}
	for i, c := range cases {
		if got := retryable(c.f, safeWrite); got != c.want {
			t.Errorf("case %d (%v %q): retryable = %v, want %v", i, c.f.status.Code(), c.f.code(), got, c.want)
		}
	}
}

func TestReadsRetryOnAnyUnavailabilityButNotOnAnswers(t *testing.T) {
	if !retryable(failure{status: status.New(codes.Unavailable, "connection reset")}, safeRead) {
		t.Error("a lost connection is retried for a read")
	}
	if !retryable(withCode(codes.Unavailable, CodeNoQuorum), safeRead) {
		t.Error("no_quorum is retried for a read")
	}
	if retryable(withCode(codes.InvalidArgument, "invalid_argument"), safeRead) {
		t.Error("bad input is final")
	}
	if retryable(withCode(codes.FailedPrecondition, CodeCompacted), safeRead) {
		t.Error("compacted is final")
	}
}

func TestIdempotentWritesRetryAfterUnknownOutcomes(t *testing.T) {
	for _, code := range []string{CodeOutcomeUnknown, CodeNotLeader, CodeNoQuorum, CodeShuttingDown} {
		if !retryable(withCode(codes.Unavailable, code), safeIdempotent) {
			t.Errorf("%s is retried for an idempotent write", code)
		}
	}
	if retryable(withCode(codes.InvalidArgument, "invalid_argument"), safeIdempotent) {
		t.Error("bad input is final")
	}
}

func TestAWriteLostMidCallHasAnUnknownOutcome(t *testing.T) {
	err := finalError(failure{status: status.New(codes.Unavailable, "error reading from server: EOF")}, safeWrite, "n1")
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("got %v, want ErrOutcomeUnknown", err)
	}
	err = finalError(failure{status: status.New(codes.Unavailable, "error reading from server: EOF")}, safeRead, "n1")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a read: got %v, want ErrUnavailable", err)
	}
}

func TestStatusesMapToTypedErrors(t *testing.T) {
	md := metadata.MD{}
	md.Set(ErrorCodeHeader, CodeModRevisionMismatch)
	md.Set(CurrentRevisionHeader, "42")
	e := fromStatus(status.New(codes.FailedPrecondition, "x"), md, "n1")
	if !errors.Is(e, ErrPreconditionFailed) || e.Revision != 42 {
		t.Fatalf("got %#v", e)
	}
	md = metadata.MD{}
	md.Set(ErrorCodeHeader, CodeCompacted)
	md.Set(OldestRevisionHeader, "7")
	e = fromStatus(status.New(codes.FailedPrecondition, "x"), md, "n1")
	if !errors.Is(e, ErrCompacted) || e.Revision != 7 {
		t.Fatalf("got %#v", e)
	}
	md = metadata.MD{}
	md.Set(ErrorCodeHeader, CodeQuotaExceeded)
	md.Set(QuotaHeader, "keys")
	e = fromStatus(status.New(codes.ResourceExhausted, "x"), md, "n1")
	if !errors.Is(e, ErrQuotaExceeded) || e.Quota != "keys" {
		t.Fatalf("got %#v", e)
	}
	md = metadata.MD{}
	md.Set(LeaderHeader, "3")
	e = fromStatus(status.New(codes.Unavailable, "x"), md, "n1")
	if !errors.Is(e, ErrUnavailable) || e.Leader != "3" {
		t.Fatalf("got %#v", e)
	}
}

func TestBackoffDoublesToItsCeiling(t *testing.T) {
	var got []int64
	for r := 0; r < 7; r++ {
		got = append(got, DefaultRetryPolicy.delay(r).Milliseconds())
	}
	want := []int64{25, 50, 100, 200, 400, 800, 800}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
}

func TestShortDurationsRoundUpNotToNever(t *testing.T) {
	if ceilUnits(400*time.Millisecond, time.Second) != 1 || ceilUnits(0, time.Second) != 0 || ceilUnits(3*time.Second, time.Second) != 3 {
		t.Fatal("seconds")
	}
	if ceilUnits(time.Microsecond, time.Millisecond) != 1 || ceilUnits(60*24*time.Hour, time.Millisecond) != 5_184_000_000 {
		t.Fatal("milliseconds")
	}
}
