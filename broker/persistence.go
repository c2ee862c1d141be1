package broker

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/broker/store"
)

// openPersistence checks the persistence file before anything uses it: an unreadable one stops the
// start with a message naming it, or is moved aside with --recover.
func (b *Broker) openPersistence() error {
	if !b.cfg.Persistence.Enabled {
		return nil
	}
	path := b.cfg.PersistenceFile()
	hasSysInfo, err := store.Check(path)
	var corrupt *store.CorruptStateError
	switch {
	case errors.As(err, &corrupt) && b.recover:
		aside, rerr := store.Recover(path, time.Now())
		if rerr != nil {
			return fmt.Errorf("--recover: %w", rerr)
		}
		b.log.Warn("persistence file was unreadable: moved it aside and starting with no stored sessions (--recover)",
			zap.String("file", path), zap.String("movedTo", aside), zap.Error(corrupt.Err))
	case err != nil:
		return err
	case b.recover:
		b.log.Info("--recover: the persistence file is readable; nothing to recover", zap.String("file", path))
	}
	b.persist = &persistence{path: path, hasSysInfo: hasSysInfo}
	return nil
}

// persistence is what openPersistence found, for Run to build the storage hook from.
type persistence struct {
	path       string
	hasSysInfo bool
}

// addStoreHook adds the storage hook (after the authorization and services hooks, so only accepted
// messages are logged), when persistence is on.
func (b *Broker) addStoreHook() error {
	if b.persist == nil {
		return nil
	}
	s := store.New(store.Options{
		Path: b.persist.path, Log: b.log.Named("store"), Server: b.server,
		CanReceive: func(cl *mqtt.Client, topic string) bool { return b.hook.OnACLCheck(cl, topic, false) },
		Dropped:    b.events.Dropped,
		Profile:    b.profile, MaxExpiry: b.server.Options.Capabilities.MaximumSessionExpiryInterval,
		HasSysInfo: b.persist.hasSysInfo,
	})
	if err := b.server.AddHook(s, nil); err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("persistence file %s is locked: is another ggbroker running on this state directory?", s.Path())
		}
		if errors.Is(err, fs.ErrPermission) {
			return store.AccessError(s.Path(), err)
		}
		return &store.CorruptStateError{Path: s.Path(), Err: err}
	}
	s.AddedTo()
	b.store = s
	return nil
}
