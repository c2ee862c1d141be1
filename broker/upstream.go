package broker

import "github.com/ggbroker/ggbroker/service"

// Upstream is the upstream connection of the first service that provides one (the bridge), nil when
// none does. Services are all constructed before any starts, so a service may ask in its Start.
func (h *host) Upstream() service.Upstream {
	for _, s := range h.b.svc.list {
		if p, ok := s.(service.UpstreamProvider); ok {
			if u := p.Upstream(); u != nil {
				return u
			}
		}
	}
	return nil
}
