package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/meshwan/meshwan/controller/credentials"
	"github.com/meshwan/meshwan/controller/enroll"
	"github.com/meshwan/meshwan/controller/export"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/network"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// codeTable maps the domain's sentinel errors to gRPC codes. It is the only
// place that does; handlers just return toStatus(err).
var codeTable = []struct {
	err  error
	code codes.Code
}{
	{intent.ErrInvalid, codes.InvalidArgument},
	{enroll.ErrInvalid, codes.InvalidArgument},
	{enroll.ErrBadCSR, codes.InvalidArgument},
	{ipam.ErrBadPool, codes.InvalidArgument},
	{intent.ErrExists, codes.AlreadyExists},
	{intent.ErrConflict, codes.FailedPrecondition},
	{intent.ErrPrecondition, codes.FailedPrecondition},
	{enroll.ErrUnmanaged, codes.FailedPrecondition},
	{export.ErrInvalid, codes.FailedPrecondition},
	{intent.ErrNotFound, codes.NotFound},
	{enroll.ErrNotFound, codes.NotFound},
	{ipam.ErrExhausted, codes.ResourceExhausted},
	{enroll.ErrRateLimited, codes.ResourceExhausted},
	{errTooLarge, codes.ResourceExhausted},
	{credentials.ErrInvalid, codes.InvalidArgument},
	{credentials.ErrNotFound, codes.NotFound},
	{credentials.ErrUnauthenticated, codes.Unauthenticated},
	{enroll.ErrTokenInvalid, codes.Unauthenticated},
	{enroll.ErrNotEnrolled, codes.Unauthenticated},
	{errUnauthenticated, codes.Unauthenticated},
	{enroll.ErrTokenRefused, codes.PermissionDenied},
	{enroll.ErrRevoked, codes.PermissionDenied},
	{enroll.ErrDeviceRefused, codes.PermissionDenied},
	{errPermission, codes.PermissionDenied},
	{network.ErrRetry, codes.Aborted},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

var (
	errUnauthenticated = errors.New("unauthenticated")
	errPermission      = errors.New("permission denied")
)

// toStatus converts a domain error to a gRPC status error. Unknown errors
// become Internal and are logged: their text may hold details that are
// not for clients.
func toStatus(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return boundStatus(err)
	}
	log = discard(log)
	for _, e := range codeTable {
		if errors.Is(err, e.err) {
			return status.Error(e.code, boundMessage(err.Error()))
		}
	}
	log.Error("internal error", "method", method, "err", err)
	return status.Error(codes.Internal, "internal error (see controller log)")
}

func wrapf(sentinel error, msg string) error { return fmt.Errorf("%w: %s", sentinel, msg) }

// MaxErrorMessage bounds the message of every error the API returns, over
// gRPC and REST: a message that quotes a field's value (a parser's "invalid
// value ..." of a megabyte) is cut here, whoever produced it. Messages that
// name fields are far shorter.
const MaxErrorMessage = 512

// boundStatus cuts err's status message to MaxErrorMessage bytes.
func boundStatus(err error) error {
	s, ok := status.FromError(err)
	if !ok || len(s.Message()) <= MaxErrorMessage {
		return err
	}
	return status.Error(s.Code(), boundMessage(s.Message()))
}

func boundMessage(m string) string {
	if len(m) <= MaxErrorMessage {
		return m
	}
	return fmt.Sprintf("%s... (message of %d bytes cut)", strings.ToValidUTF8(m[:MaxErrorMessage-64], ""), len(m))
}
