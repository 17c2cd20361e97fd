package api

import (
	"context"
	"time"

	"github.com/meshwan/meshwan/controller/credentials"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CreateCredential makes a credential; its secret is in the response only.
func (a *Admin) CreateCredential(ctx context.Context, req *pb.CreateCredentialRequest) (*pb.CreateCredentialResponse, error) {
	c, secret, err := a.Credentials.Create(ctx, req.GetName(), roleFromPB(req.GetRole()), time.Duration(req.GetTtlSeconds())*time.Second)
	if err != nil {
		return nil, toStatus(a.Log, "CreateCredential", err)
	}
	by, _ := PrincipalFrom(ctx)
	a.Log.Info("admin credential created", "credential_id", c.ID, "name", c.Name, "role", c.Role.String(), "expires_at", c.ExpiresAt, "by", by.ID)
	return &pb.CreateCredentialResponse{Credential: credentialToPB(c), Secret: secret}, nil
}

func (a *Admin) ListCredentials(ctx context.Context, _ *pb.ListCredentialsRequest) (*pb.ListCredentialsResponse, error) {
	out := &pb.ListCredentialsResponse{}
	for _, c := range a.Credentials.List() {
		out.Credentials = append(out.Credentials, credentialToPB(c))
	}
	return out, nil
}

// RevokeCredential refuses the credential on every replica from now on.
func (a *Admin) RevokeCredential(ctx context.Context, req *pb.RevokeCredentialRequest) (*pb.Credential, error) {
	c, err := a.Credentials.Revoke(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(a.Log, "RevokeCredential", err)
	}
	by, _ := PrincipalFrom(ctx)
	a.Log.Info("admin credential revoked", "credential_id", c.ID, "name", c.Name, "by", by.ID)
	return credentialToPB(c), nil
}

func roleFromPB(r pb.AdminRole) credentials.Role {
	switch r {
	case pb.AdminRole_ADMIN_ROLE_READ_ONLY:
		return credentials.ReadOnly
	case pb.AdminRole_ADMIN_ROLE_OPERATOR:
		return credentials.Operator
	case pb.AdminRole_ADMIN_ROLE_ADMIN:
		return credentials.Admin
	}
	return 0
}

func roleToPB(r credentials.Role) pb.AdminRole {
	switch r {
	case credentials.ReadOnly:
		return pb.AdminRole_ADMIN_ROLE_READ_ONLY
	case credentials.Operator:
		return pb.AdminRole_ADMIN_ROLE_OPERATOR
	case credentials.Admin:
		return pb.AdminRole_ADMIN_ROLE_ADMIN
	}
	return pb.AdminRole_ADMIN_ROLE_UNSPECIFIED
}

func credentialToPB(c credentials.Credential) *pb.Credential {
	out := &pb.Credential{Id: c.ID, Name: c.Name, Role: roleToPB(c.Role), CreatedAt: timestamppb.New(c.CreatedAt), Revoked: c.Revoked}
	if !c.ExpiresAt.IsZero() {
		out.ExpiresAt = timestamppb.New(c.ExpiresAt)
	}
	return out
}
