package localpg

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A cluster copied from the template answers to its own superuser
// password only: the template's, which every copy starts with, no longer
// logs in.
func TestAClusterFromTheTemplateHasItsOwnSuperuserPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connect(t, primary.SuperDSN("postgres"))
	if primary.SuperPassword == templatePassword {
		t.Fatal("the cluster kept the template's password")
	}
	conn, err := pgx.Connect(ctx, primary.DSN("postgres", primary.SuperUser, templatePassword))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("the template's password logged in to a cluster made from it")
	}
}

// A template a temp cleaner took files from is made again, not copied.
func TestATemplateMissingFilesIsMadeAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := filepath.Join(t.TempDir(), "template")
	if err := makeTemplate(ctx, primary.owner, home); err != nil {
		t.Fatal(err)
	}
	if !complete(home) {
		t.Fatal("a template just made is not complete")
	}
	if err := os.Remove(filepath.Join(home, "data", "PG_VERSION")); err != nil {
		t.Fatal(err)
	}
	if complete(home) {
		t.Fatal("a template without PG_VERSION counts as complete")
	}
	if err := makeTemplate(ctx, primary.owner, home); err != nil {
		t.Fatal(err)
	}
	if !complete(home) {
		t.Fatal("the template was not made again")
	}
}
