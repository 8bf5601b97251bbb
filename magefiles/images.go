package main

// One namespace per image folder, each target a one-liner over the generic machine:* targets.

import (
	"github.com/magefile/mage/mg"

	"berth/internal/machines"
)

// Build builds the base rootfs and then every machine (mysql, relaycreator, haproxy, strfry).
func Build() error { return machines.BaseAndAll(interruptible()) }

// Clean stops and removes every machine (data under [Paths] Srv is kept); base:clean removes the base.
func Clean() error { return machines.All("clean") }

// Status prints one table of every machine.
func Status() error { return machines.All("status") }

// Haproxy is the relay's HAProxy TLS edge machine.
type Haproxy mg.Namespace

// Install builds the haproxy machine from the base and swaps it in (PLAN=1 prints the steps).
func (Haproxy) Install() error { return machines.Do("install", "haproxy") }

// Clean stops the haproxy machine and removes it; its data under [Paths] Srv is kept.
func (Haproxy) Clean() error { return machines.Do("clean", "haproxy") }

// Console starts the haproxy machine if needed and logs in; it prints where the root password is.
func (Haproxy) Console() error { return machines.Do("console", "haproxy") }

// Start starts the haproxy machine.
func (Haproxy) Start() error { return machines.Do("start", "haproxy") }

// Stop stops the haproxy machine.
func (Haproxy) Stop() error { return machines.Do("stop", "haproxy") }

// Status prints the haproxy machine's state, enablement, health, address and build time.
func (Haproxy) Status() error { return machines.Do("status", "haproxy") }

// Enable starts the haproxy machine at boot.
func (Haproxy) Enable() error { return machines.Do("enable", "haproxy") }

// Logs prints the haproxy machine's recent journal.
func (Haproxy) Logs() error { return machines.Do("logs", "haproxy") }

// Mysql is the relay's MariaDB machine.
type Mysql mg.Namespace

// Install builds the mysql machine from the base and swaps it in (PLAN=1 prints the steps).
func (Mysql) Install() error { return machines.Do("install", "mysql") }

// Clean stops the mysql machine and removes it; its data under [Paths] Srv is kept.
func (Mysql) Clean() error { return machines.Do("clean", "mysql") }

// Console starts the mysql machine if needed and logs in; it prints where the root password is.
func (Mysql) Console() error { return machines.Do("console", "mysql") }

// Start starts the mysql machine.
func (Mysql) Start() error { return machines.Do("start", "mysql") }

// Stop stops the mysql machine.
func (Mysql) Stop() error { return machines.Do("stop", "mysql") }

// Status prints the mysql machine's state, enablement, health, address and build time.
func (Mysql) Status() error { return machines.Do("status", "mysql") }

// Enable starts the mysql machine at boot.
func (Mysql) Enable() error { return machines.Do("enable", "mysql") }

// Logs prints the mysql machine's recent journal.
func (Mysql) Logs() error { return machines.Do("logs", "mysql") }

// Strfry is the relay engine (strfry, cookiecutter, spamblaster, interceptor) machine.
type Strfry mg.Namespace

// Install builds the strfry machine from the base and swaps it in (PLAN=1 prints the steps).
func (Strfry) Install() error { return machines.Do("install", "strfry") }

// Clean stops the strfry machine and removes it; its data under [Paths] Srv is kept.
func (Strfry) Clean() error { return machines.Do("clean", "strfry") }

// Console starts the strfry machine if needed and logs in; it prints where the root password is.
func (Strfry) Console() error { return machines.Do("console", "strfry") }

// Start starts the strfry machine.
func (Strfry) Start() error { return machines.Do("start", "strfry") }

// Stop stops the strfry machine.
func (Strfry) Stop() error { return machines.Do("stop", "strfry") }

// Status prints the strfry machine's state, enablement, health, address and build time.
func (Strfry) Status() error { return machines.Do("status", "strfry") }

// Enable starts the strfry machine at boot.
func (Strfry) Enable() error { return machines.Do("enable", "strfry") }

// Logs prints the strfry machine's recent journal.
func (Strfry) Logs() error { return machines.Do("logs", "strfry") }

// Relaycreator is the relay platform's web app (relaycreator) machine.
type Relaycreator mg.Namespace

// Install builds the relaycreator machine from the base and swaps it in (PLAN=1 prints the steps).
func (Relaycreator) Install() error { return machines.Do("install", "relaycreator") }

// Clean stops the relaycreator machine and removes it; its data under [Paths] Srv is kept.
func (Relaycreator) Clean() error { return machines.Do("clean", "relaycreator") }

// Console starts the relaycreator machine if needed and logs in; it prints where the root password is.
func (Relaycreator) Console() error { return machines.Do("console", "relaycreator") }

// Start starts the relaycreator machine.
func (Relaycreator) Start() error { return machines.Do("start", "relaycreator") }

// Stop stops the relaycreator machine.
func (Relaycreator) Stop() error { return machines.Do("stop", "relaycreator") }

// Status prints the relaycreator machine's state, enablement, health, address and build time.
func (Relaycreator) Status() error { return machines.Do("status", "relaycreator") }

// Enable starts the relaycreator machine at boot.
func (Relaycreator) Enable() error { return machines.Do("enable", "relaycreator") }

// Logs prints the relaycreator machine's recent journal.
func (Relaycreator) Logs() error { return machines.Do("logs", "relaycreator") }
