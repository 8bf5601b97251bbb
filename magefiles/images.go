package main

// One namespace per image folder, each target a one-liner over the generic machine:* targets.

import (
	"github.com/magefile/mage/mg"

	"berth/internal/fleet"
)

// Build builds the base rootfs and then every machine (mysql, relaycreator, haproxy, strfry).
func Build() error { return fleet.BaseAndAll(interruptible()) }

// Clean stops and removes every machine (data under [Paths] Srv is kept); base:clean removes the base.
func Clean() error { return fleet.All("clean") }

// Status prints one table of every machine.
func Status() error { return fleet.All("status") }

// Haproxy is the relay's HAProxy TLS edge machine.
type Haproxy mg.Namespace

// Install builds the haproxy machine from the base and swaps it in (PLAN=1 prints the steps).
func (Haproxy) Install() error { return fleet.Do("install", "haproxy") }

// Clean stops the haproxy machine and removes it; its data under [Paths] Srv is kept.
func (Haproxy) Clean() error { return fleet.Do("clean", "haproxy") }

// Console starts the haproxy machine if needed and logs in; it prints where the root password is.
func (Haproxy) Console() error { return fleet.Do("console", "haproxy") }

// Start starts the haproxy machine.
func (Haproxy) Start() error { return fleet.Do("start", "haproxy") }

// Stop stops the haproxy machine.
func (Haproxy) Stop() error { return fleet.Do("stop", "haproxy") }

// Status prints the haproxy machine's state, enablement, health, address and build time.
func (Haproxy) Status() error { return fleet.Do("status", "haproxy") }

// Enable starts the haproxy machine at boot.
func (Haproxy) Enable() error { return fleet.Do("enable", "haproxy") }

// Logs prints the haproxy machine's recent journal.
func (Haproxy) Logs() error { return fleet.Do("logs", "haproxy") }

// Mysql is the relay's MariaDB machine.
type Mysql mg.Namespace

// Install builds the mysql machine from the base and swaps it in (PLAN=1 prints the steps).
func (Mysql) Install() error { return fleet.Do("install", "mysql") }

// Clean stops the mysql machine and removes it; its data under [Paths] Srv is kept.
func (Mysql) Clean() error { return fleet.Do("clean", "mysql") }

// Console starts the mysql machine if needed and logs in; it prints where the root password is.
func (Mysql) Console() error { return fleet.Do("console", "mysql") }

// Start starts the mysql machine.
func (Mysql) Start() error { return fleet.Do("start", "mysql") }

// Stop stops the mysql machine.
func (Mysql) Stop() error { return fleet.Do("stop", "mysql") }

// Status prints the mysql machine's state, enablement, health, address and build time.
func (Mysql) Status() error { return fleet.Do("status", "mysql") }

// Enable starts the mysql machine at boot.
func (Mysql) Enable() error { return fleet.Do("enable", "mysql") }

// Logs prints the mysql machine's recent journal.
func (Mysql) Logs() error { return fleet.Do("logs", "mysql") }

// Strfry is the relay engine (strfry, cookiecutter, spamblaster, interceptor) machine.
type Strfry mg.Namespace

// Install builds the strfry machine from the base and swaps it in (PLAN=1 prints the steps).
func (Strfry) Install() error { return fleet.Do("install", "strfry") }

// Clean stops the strfry machine and removes it; its data under [Paths] Srv is kept.
func (Strfry) Clean() error { return fleet.Do("clean", "strfry") }

// Console starts the strfry machine if needed and logs in; it prints where the root password is.
func (Strfry) Console() error { return fleet.Do("console", "strfry") }

// Start starts the strfry machine.
func (Strfry) Start() error { return fleet.Do("start", "strfry") }

// Stop stops the strfry machine.
func (Strfry) Stop() error { return fleet.Do("stop", "strfry") }

// Status prints the strfry machine's state, enablement, health, address and build time.
func (Strfry) Status() error { return fleet.Do("status", "strfry") }

// Enable starts the strfry machine at boot.
func (Strfry) Enable() error { return fleet.Do("enable", "strfry") }

// Logs prints the strfry machine's recent journal.
func (Strfry) Logs() error { return fleet.Do("logs", "strfry") }

// Relaycreator is the relay platform's web app (relaycreator) machine.
type Relaycreator mg.Namespace

// Install builds the relaycreator machine from the base and swaps it in (PLAN=1 prints the steps).
func (Relaycreator) Install() error { return fleet.Do("install", "relaycreator") }

// Clean stops the relaycreator machine and removes it; its data under [Paths] Srv is kept.
func (Relaycreator) Clean() error { return fleet.Do("clean", "relaycreator") }

// Console starts the relaycreator machine if needed and logs in; it prints where the root password is.
func (Relaycreator) Console() error { return fleet.Do("console", "relaycreator") }

// Start starts the relaycreator machine.
func (Relaycreator) Start() error { return fleet.Do("start", "relaycreator") }

// Stop stops the relaycreator machine.
func (Relaycreator) Stop() error { return fleet.Do("stop", "relaycreator") }

// Status prints the relaycreator machine's state, enablement, health, address and build time.
func (Relaycreator) Status() error { return fleet.Do("status", "relaycreator") }

// Enable starts the relaycreator machine at boot.
func (Relaycreator) Enable() error { return fleet.Do("enable", "relaycreator") }

// Logs prints the relaycreator machine's recent journal.
func (Relaycreator) Logs() error { return fleet.Do("logs", "relaycreator") }
