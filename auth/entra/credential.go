package entra

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// DefaultScope is the OAuth scope of Azure Database for PostgreSQL (and MySQL)
// access tokens; the Azure CLI calls it --resource-type oss-rdbms.
const DefaultScope = "https://ossrdbms-aad.database.windows.net/.default"

// Credential types accepted in Config.Credential (TOML key entra_credential).
const (
	CredentialDefault          = "default"
	CredentialManagedIdentity  = "managed_identity"
	CredentialWorkloadIdentity = "workload_identity"
	CredentialClientSecret     = "client_secret"
	CredentialAzureCLI         = "azure_cli"
)

// DefaultRefreshTimeout bounds one token request when Config.RefreshTimeout is
// zero. It is well above the ~8 s the SDK spends retrying an endpoint that
// answers 500 with its default retry policy.
const DefaultRefreshTimeout = 30 * time.Second

// Config selects and configures the Entra ID credential for one server
// database. The zero value is not useful on its own: Credential, and for some
// credential types ClientID/TenantID and a secret source, must be set.
// Config holds no secret itself, only where to read one from, so it is safe to
// print.
type Config struct {
	// Credential is one of "default", "managed_identity", "workload_identity",
	// "client_secret" or "azure_cli". Empty means "default".
	Credential string
	// ClientID is the client ID of a user-assigned managed identity
	// (managed_identity; empty means system-assigned) or the application ID
	// (workload_identity, client_secret).
	ClientID string
	// TenantID is the directory (tenant) ID for workload_identity,
	// client_secret, azure_cli and default.
	TenantID string
	// ClientSecretFile is the file the client secret is read from
	// (client_secret only). Surrounding white space is trimmed.
	ClientSecretFile string
	// ClientSecretEnv is the environment variable the client secret is read
	// from (client_secret only). Exactly one of ClientSecretFile and
	// ClientSecretEnv must be set.
	ClientSecretEnv string
	// TokenFile is the Kubernetes projected service account token for
	// workload_identity; empty means $AZURE_FEDERATED_TOKEN_FILE.
	TokenFile string
	// AuthorityHost is the Entra authority, e.g.
	// "https://login.microsoftonline.us/" for Azure Government; empty means
	// the public cloud. It must use https.
	AuthorityHost string
	// Scope is the token scope; empty means DefaultScope.
	Scope string
	// Database names the configured database in TokenError messages only.
	Database string
	// Transport, if set, replaces the HTTP client of the credential (tests).
	Transport policy.Transporter
	// Retry, if set, replaces the SDK's retry policy for token requests. The
	// default retries 408/429/5xx three times with backoff (about 8 s in all).
	// MaxRetries < 0 means a single try.
	Retry *policy.RetryOptions
	// DisableInstanceDiscovery skips the instance metadata request to the
	// public cloud (disconnected and private clouds, tests).
	DisableInstanceDiscovery bool
	// RefreshTimeout bounds each token request; zero means
	// DefaultRefreshTimeout.
	RefreshTimeout time.Duration
	// Now is the clock used for expiry decisions; nil means time.Now.
	Now func() time.Time
}

// NewCredential builds the azidentity credential selected by cfg.Credential.
// It reads a client secret from its file or environment variable once, now.
// Errors name the offending setting but never contain the secret. The
// returned credential is safe for concurrent use; wrap it in a TokenSource
// for caching and background refresh.
func NewCredential(cfg Config) (azcore.TokenCredential, error) {
	kind := cfg.Credential
	if kind == "" {
		kind = CredentialDefault
	}
	cred, err := newCredential(kind, cfg)
	if err != nil {
		return nil, fmt.Errorf("entra credential %q: %w", kind, err)
	}
	return cred, nil
}

func newCredential(kind string, cfg Config) (azcore.TokenCredential, error) {
	var opts azcore.ClientOptions
	if cfg.AuthorityHost != "" {
		u, err := url.Parse(cfg.AuthorityHost)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("authority host %q: must be an https URL", cfg.AuthorityHost)
		}
		opts.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: cfg.AuthorityHost}
	}
	if cfg.Transport != nil {
		opts.Transport = cfg.Transport
	}
	if cfg.Retry != nil {
		opts.Retry = *cfg.Retry
	}
	if kind != CredentialClientSecret && (cfg.ClientSecretFile != "" || cfg.ClientSecretEnv != "") {
		return nil, errors.New("a client secret file or variable is only used by the client_secret credential")
	}
	if kind != CredentialWorkloadIdentity && cfg.TokenFile != "" {
		return nil, errors.New("a federated token file is only used by the workload_identity credential")
	}

	switch kind {
	case CredentialManagedIdentity:
		o := azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		if cfg.ClientID != "" {
			o.ID = azidentity.ClientID(cfg.ClientID)
		}
		return azidentity.NewManagedIdentityCredential(&o)

	case CredentialWorkloadIdentity:
		return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions:            opts,
			ClientID:                 cfg.ClientID,
			TenantID:                 cfg.TenantID,
			TokenFilePath:            cfg.TokenFile,
			DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
		})

	case CredentialClientSecret:
		if cfg.TenantID == "" || cfg.ClientID == "" {
			return nil, errors.New("tenant ID and client ID are required")
		}
		secret, err := readSecret(cfg)
		if err != nil {
			return nil, err
		}
		cred, err := azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, secret,
			&azidentity.ClientSecretCredentialOptions{
				ClientOptions:            opts,
				DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
			})
		if err != nil {
			return nil, redact(err, secret)
		}
		return &redactingCredential{cred: cred, secret: &secret}, nil

	case CredentialAzureCLI:
		if cfg.ClientID != "" {
			return nil, errors.New("a client ID is not used by the azure_cli credential (it uses the signed-in az account)")
		}
		return azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{TenantID: cfg.TenantID})

	case CredentialDefault:
		if cfg.ClientID != "" {
			// DefaultAzureCredential takes the client ID from AZURE_CLIENT_ID
			// only; silently ignoring ours would pick another identity.
			return nil, errors.New("a client ID is not used by the default credential; set AZURE_CLIENT_ID or choose managed_identity or workload_identity")
		}
		return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions:            opts,
			TenantID:                 cfg.TenantID,
			DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
		})
	}
	return nil, fmt.Errorf("unknown credential type (want %s, %s, %s, %s or %s)",
		CredentialDefault, CredentialManagedIdentity, CredentialWorkloadIdentity, CredentialClientSecret, CredentialAzureCLI)
}

// readSecret returns the client secret from the one configured source. Its
// errors name the file or variable, never the value.
func readSecret(cfg Config) (string, error) {
	switch {
	case cfg.ClientSecretFile != "" && cfg.ClientSecretEnv != "":
		return "", errors.New("set either a client secret file or a client secret variable, not both")
	case cfg.ClientSecretFile != "":
		b, err := os.ReadFile(cfg.ClientSecretFile)
		if err != nil {
			// *PathError carries the path and the OS reason only.
			return "", fmt.Errorf("read client secret: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("client secret file %q is empty", cfg.ClientSecretFile)
		}
		return s, nil
	case cfg.ClientSecretEnv != "":
		s := strings.TrimSpace(os.Getenv(cfg.ClientSecretEnv))
		if s == "" {
			return "", fmt.Errorf("client secret variable %s is unset or empty", cfg.ClientSecretEnv)
		}
		return s, nil
	}
	return "", errors.New("a client secret file or client secret variable is required")
}

// redactingCredential removes the client secret from GetToken errors. Entra
// does not echo secrets, but an error body from a proxy or a misbehaving
// endpoint could, and these errors end up in logs.
type redactingCredential struct {
	cred azcore.TokenCredential
	// secret is a pointer so that printing a copy of the struct shows an
	// address rather than the secret.
	secret *string
}

func (c *redactingCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.cred.GetToken(ctx, opts)
	if err != nil {
		return tok, redact(err, *c.secret)
	}
	return tok, nil
}

// String keeps fmt from printing the secret field.
func (c *redactingCredential) String() string { return "entra.ClientSecretCredential" }

// GoString keeps %#v from printing the secret field.
func (c *redactingCredential) GoString() string { return c.String() }

// redact returns err, or, if its text contains secret, an error with the
// secret replaced. The result deliberately has no Unwrap method, so nothing
// downstream can reach the original text; classify looks inside it itself.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), secret, redacted), err: err}
}

const redacted = "[redacted]"

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
