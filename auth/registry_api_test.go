package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

func TestThingsCRUD(t *testing.T) {
	reg, ca := newTestRegistry(t)
	th, err := reg.CreateThing(Thing{Name: "t1", Attributes: map[string]string{"a": "1"}})
	if err != nil || th.ID == "" || th.Version != 1 {
		t.Fatalf("CreateThing: %+v %v", th, err)
	}
	again, err := reg.CreateThing(Thing{Name: "t1", Attributes: map[string]string{"a": "1"}})
	if err != nil || again.ID != th.ID {
		t.Fatalf("same CreateThing again: %+v %v (AWS returns the thing)", again, err)
	}
	if _, err := reg.CreateThing(Thing{Name: "t1", Attributes: map[string]string{"a": "2"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateThing with other attributes: %v, want ErrExists", err)
	}
	if _, err := reg.CreateThing(Thing{Name: "bad name"}); err == nil {
		t.Fatal("invalid thing name accepted")
	}
	edit := func(t *Thing) error { t.Attributes["b"] = "2"; return nil }
	if err := reg.UpdateThing("t1", 1, edit); err != nil {
		t.Fatal(err)
	}
	if err := reg.UpdateThing("t1", 1, edit); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale expectedVersion: %v", err)
	}
	if err := reg.UpdateThing("nope", 0, edit); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a missing thing: %v", err)
	}
	got, _, _ := reg.Thing("t1")
	if got.Version != 2 || got.Attributes["b"] != "2" || got.ID != th.ID {
		t.Fatalf("after update: %+v", got)
	}

	_, cert := mustCreate(t, reg, ca, "t2")
	id := certs.Fingerprint(cert)
	if _, err := reg.DeleteThing("t2", 0); !errors.Is(err, ErrDeleteConflict) {
		t.Fatalf("delete of a thing with a certificate: %v", err)
	}
	if err := reg.DetachThing(id, "t2"); err != nil {
		t.Fatal(err)
	}
	if existed, err := reg.DeleteThing("t2", 0); err != nil || !existed {
		t.Fatalf("delete after detach: %v %v", existed, err)
	}
	if existed, err := reg.DeleteThing("t2", 0); err != nil || existed {
		t.Fatalf("delete of a missing thing: %v %v (AWS: no error)", existed, err)
	}
}

func TestCertificateLifecycle(t *testing.T) {
	reg, ca := newTestRegistry(t)
	_, _, cert, err := ca.IssueClient("c1", certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reg.AddCertificate(cert, StatusPendingActivation, "ca-id")
	if err != nil || rec.Status != StatusPendingActivation || len(rec.Things) != 0 {
		t.Fatalf("AddCertificate: %+v %v", rec, err)
	}
	if _, err := reg.AddCertificate(cert, StatusActive, ""); !errors.Is(err, ErrExists) {
		t.Fatalf("second AddCertificate: %v", err)
	}
	if _, err := reg.CreateThing(Thing{Name: "t1"}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
		want error
	}{
		{"activate", func() error { return reg.SetCertificateStatus(rec.ID, StatusActive) }, nil},
		{"attach thing", func() error { return reg.AttachThing(rec.ID, "t1") }, nil},
		{"attach to a missing thing", func() error { return reg.AttachThing(rec.ID, "nope") }, ErrNotFound},
		{"attach policy", func() error { return reg.SetCertificatePolicy(rec.ID, "p1", true) }, nil},
		{"delete while ACTIVE", func() error { return reg.DeleteCertificate(rec.ID, false) }, ErrCertificateState},
		{"deactivate", func() error { return reg.SetCertificateStatus(rec.ID, StatusInactive) }, nil},
		{"delete while attached to a thing", func() error { return reg.DeleteCertificate(rec.ID, true) }, ErrDeleteConflict},
		{"detach thing", func() error { return reg.DetachThing(rec.ID, "t1") }, nil},
		{"delete with a policy", func() error { return reg.DeleteCertificate(rec.ID, false) }, ErrDeleteConflict},
		{"revoke", func() error { return reg.SetCertificateStatus(rec.ID, StatusRevoked) }, nil},
		{"revoked stays revoked", func() error { return reg.SetCertificateStatus(rec.ID, StatusActive) }, ErrCertificateState},
		{"register cannot revive it", func() error { _, err := reg.Register(Thing{Name: "t1"}, cert, nil); return err }, ErrCertificateState},
		{"CLI activate cannot revive it", func() error { _, err := reg.SetStatus(rec.ID, StatusActive); return err }, ErrCertificateState},
		{"force delete with a policy", func() error { return reg.DeleteCertificate(rec.ID, true) }, nil},
		{"gone", func() error { return reg.SetCertificateStatus(rec.ID, StatusActive) }, ErrNotFound},
	}
	for _, s := range steps {
		err := s.do()
		if s.want == nil && err != nil || s.want != nil && !errors.Is(err, s.want) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.want)
		}
	}
	if got, _, _ := reg.Certificate(rec.ID); got != nil {
		t.Fatalf("deleted certificate still there: %+v", got)
	}
}
