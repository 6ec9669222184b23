package strata

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata keys the server sets on errors (the same table as the Rust SDK's error_headers).
const (
	// ErrorCodeHeader carries the stable, machine-readable error code (see the Code* constants).
	ErrorCodeHeader = "x-strata-error"
	// CurrentRevisionHeader carries a key's mod revision on a failed precondition.
	CurrentRevisionHeader = "x-strata-current-revision"
	// OldestRevisionHeader carries the oldest revision still kept, on "compacted".
	OldestRevisionHeader = "x-strata-oldest-revision"
	// LeaderHeader carries the leader's node id, when the server knows one.
	LeaderHeader = "x-strata-leader"
	// QuotaHeader names the quota that a "quota_exceeded" error hit.
	QuotaHeader = "x-strata-quota"
)

// Values of the x-strata-error header that the SDK acts on.
const (
	CodeNotLeader           = "not_leader"
	CodeLeaderUnreachable   = "leader_unreachable"
	CodeNoQuorum            = "no_quorum"
	CodeShuttingDown        = "shutting_down"
	CodeOutcomeUnknown      = "outcome_unknown"
	CodeCompacted           = "compacted"
	CodeQuotaExceeded       = "quota_exceeded"
	CodeModRevisionMismatch = "mod_revision_mismatch"
	CodeAlreadyExists       = "already_exists"
	CodeTooManyKeys         = "too_many_keys"
	CodeDiskFull            = "disk_full"
	CodeSlowReader          = "slow_reader"
)

// Sentinel errors: every error the SDK returns wraps one of these where it applies, so that
// errors.Is(err, strata.ErrNotFound) works whatever the details.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrPreconditionFailed = errors.New("precondition failed")
	ErrCompacted          = errors.New("history compacted")
	// ErrOutcomeUnknown: the write may or may not have been applied (the leader did not
	// answer in time, or the connection was lost mid-call). Re-read before retrying anything
	// that is not idempotent.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrTimeout: the caller's deadline passed first; for a write the outcome is unknown.
	ErrTimeout          = errors.New("timed out")
	ErrUnavailable      = errors.New("unavailable")
	ErrUnauthenticated  = errors.New("unauthenticated")
	ErrPermissionDenied = errors.New("permission denied")
	ErrQuotaExceeded    = errors.New("quota exceeded")
	// ErrConsumerTooSlow: a subscription's caller fell too far behind; subscribe again.
	ErrConsumerTooSlow = errors.New("consumer too slow")
	// ErrClosed: the client, subscription or watch was closed.
	ErrClosed = errors.New("closed")
)

// Error is a failed call: what kind (Kind, one of the sentinels above), the server's code and
// message, and the facts the server attached.
type Error struct {
	// Kind is the sentinel this error matches with errors.Is.
	Kind error
	// Code is the x-strata-error value ("" when the server sent none).
	Code string
	// GRPCCode is the status code of the call.
	GRPCCode codes.Code
	Message  string
	// Revision is the current mod revision (precondition failures, already exists) or the
	// oldest kept revision (compacted).
	Revision uint64
	// Leader is the leader's node id, when an unavailable node knew it.
	Leader string
	// Quota names the exhausted quota.
	Quota string
	// Endpoint is the node that answered, where known.
	Endpoint string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Is makes errors.Is(err, strata.ErrNotFound) and the like work; a timeout also matches
// context.DeadlineExceeded.
func (e *Error) Is(target error) bool {
	return e.Kind == target || (e.Kind == ErrTimeout && target == context.DeadlineExceeded)
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

// fromStatus maps a gRPC status (and its trailers) to an *Error, exactly as the Rust SDK's
// From<tonic::Status> does.
func fromStatus(st *status.Status, md metadata.MD, endpoint string) *Error {
	header := func(name string) string {
		if v := md.Get(name); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	number := func(name string) uint64 {
		n, _ := strconv.ParseUint(header(name), 10, 64)
		return n
	}
	e := &Error{
		Code:     header(ErrorCodeHeader),
		GRPCCode: st.Code(),
		Message:  st.Message(),
		Endpoint: endpoint,
	}
	switch {
	case st.Code() == codes.InvalidArgument:
		e.Kind = ErrInvalidArgument
	case st.Code() == codes.Unauthenticated:
		e.Kind = ErrUnauthenticated
	case st.Code() == codes.PermissionDenied:
		e.Kind = ErrPermissionDenied
	case st.Code() == codes.NotFound:
		e.Kind = ErrNotFound
	case st.Code() == codes.AlreadyExists:
		e.Kind, e.Revision = ErrAlreadyExists, number(CurrentRevisionHeader)
	case st.Code() == codes.FailedPrecondition && e.Code == CodeCompacted:
		e.Kind, e.Revision = ErrCompacted, number(OldestRevisionHeader)
	case st.Code() == codes.FailedPrecondition:
		e.Kind, e.Revision = ErrPreconditionFailed, number(CurrentRevisionHeader)
	case st.Code() == codes.DeadlineExceeded && e.Code == CodeOutcomeUnknown:
		e.Kind = ErrOutcomeUnknown
	case st.Code() == codes.DeadlineExceeded:
		e.Kind = ErrTimeout
	case st.Code() == codes.ResourceExhausted && e.Code == CodeQuotaExceeded:
		e.Kind, e.Quota = ErrQuotaExceeded, header(QuotaHeader)
	case st.Code() == codes.Unavailable:
		e.Kind, e.Leader = ErrUnavailable, header(LeaderHeader)
	default:
		e.Kind = errors.New(strings.ToLower(st.Code().String()))
	}
	return e
}

// failure is one failed attempt: the status, its trailers and whether the transport (not a
// server) produced it.
type failure struct {
	status *status.Status
	md     metadata.MD
	// ctxErr is set when the caller's own context ended the call.
	ctxErr error
}

func (f failure) code() string {
	if v := f.md.Get(ErrorCodeHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

// transport reports a failure that no server answered: the connection was lost or could not
// be made. gRPC reports those as UNAVAILABLE without Strata's header.
func (f failure) transport() bool {
	return f.ctxErr == nil && f.code() == "" && f.status.Code() == codes.Unavailable
}

// refused reports a failure to connect at all: nothing was sent, so a write may be retried.
// grpc-go reports a dial failure as UNAVAILABLE with "connection error" (or "connection
// refused") in the message, before any request bytes leave.
func (f failure) refused() bool {
	if !f.transport() {
		return false
	}
	m := f.status.Message()
	return strings.Contains(m, "connection refused") ||
		strings.Contains(m, "connection error") ||
		strings.Contains(m, "no such host")
}

// safety says when a failed call may be sent again.
type safety int

const (
	// safeRead changes nothing: always safe to retry.
	safeRead safety = iota
	// safeWrite is retried only when certainly not applied.
	safeWrite
	// safeIdempotent is a write the server recognises when repeated (a publish with a
	// message id, a registration): retried like a read, and after unknown outcomes too.
	safeIdempotent
)

// retryable says whether a failed call may be retried without risking a second application;
// the same table as the Rust SDK's retry::retryable.
func retryable(f failure, s safety) bool {
	if f.ctxErr != nil {
		return false
	}
	switch code := f.code(); {
	case code == CodeNotLeader || code == CodeLeaderUnreachable:
		return true // the server says it did nothing
	case (code == CodeNoQuorum || code == CodeShuttingDown) && s != safeWrite:
		return true
	case code == CodeOutcomeUnknown && s == safeIdempotent:
		return true
	case code != "":
		return false // every other answer is final
	case s == safeWrite:
		return f.refused()
	default:
		return f.status.Code() == codes.Unavailable
	}
}

// finalError is what the caller sees: a write whose connection failed mid-call has an
// unknown outcome, whatever code the transport chose for it.
func finalError(f failure, s safety, endpoint string) error {
	if f.ctxErr != nil {
		kind := ErrTimeout
		if errors.Is(f.ctxErr, context.Canceled) {
			kind = context.Canceled
		}
		return &Error{Kind: kind, GRPCCode: f.status.Code(), Message: f.status.Message(), Endpoint: endpoint}
	}
	if s == safeWrite && f.transport() && !f.refused() {
		return &Error{
			Kind:     ErrOutcomeUnknown,
			GRPCCode: f.status.Code(),
			Message: fmt.Sprintf("the connection to %s failed during the call (%s); the write "+
				"may or may not have been applied", endpoint, f.status.Message()),
			Endpoint: endpoint,
		}
	}
	return fromStatus(f.status, f.md, endpoint)
}
