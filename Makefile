# `make install` for hosts without Debian packages (docs/xen-host.md); `cargo deb` builds the
# same files into a .deb. DESTDIR stages the installation; the paths below are those the
# systemd unit and Xen expect.
DESTDIR ?=
SBINDIR ?= /usr/sbin
BINDIR ?= /usr/bin
XEN_SCRIPT_DIR ?= /etc/xen/scripts
UNITDIR ?= /lib/systemd/system
MANDIR ?= /usr/share/man
DOCDIR ?= /usr/share/doc/tokenback

.PHONY: all install uninstall

all:
	cargo build --release --workspace --bin tokenbackd --bin tokentop

install: all
	install -D -m 0755 target/release/tokenbackd $(DESTDIR)$(SBINDIR)/tokenbackd
	install -D -m 0755 xl-scripts/block-tokenback $(DESTDIR)$(XEN_SCRIPT_DIR)/block-tokenback
	install -D -m 0644 packaging/tokenbackd.service $(DESTDIR)$(UNITDIR)/tokenbackd.service
	install -D -m 0644 docs/tokenbackd.8 $(DESTDIR)$(MANDIR)/man8/tokenbackd.8
	install -D -m 0755 target/release/tokentop $(DESTDIR)$(BINDIR)/tokentop
	install -D -m 0644 docs/tokentop.1 $(DESTDIR)$(MANDIR)/man1/tokentop.1
	install -d $(DESTDIR)$(DOCDIR)/examples/xl
	install -m 0644 docs/xen-host.md docs/qos.md docs/tokentop.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 examples/xl/*.cfg $(DESTDIR)$(DOCDIR)/examples/xl/

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/tokenbackd $(DESTDIR)$(XEN_SCRIPT_DIR)/block-tokenback \
		$(DESTDIR)$(UNITDIR)/tokenbackd.service $(DESTDIR)$(MANDIR)/man8/tokenbackd.8 \
		$(DESTDIR)$(BINDIR)/tokentop $(DESTDIR)$(MANDIR)/man1/tokentop.1
	rm -rf $(DESTDIR)$(DOCDIR)
