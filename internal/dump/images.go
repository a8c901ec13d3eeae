package dump

import (
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/stasis-cr/stasis/internal/stats"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/netlock"
	"github.com/stasis-cr/stasis/internal/pstree"
)

// ImgVersion is CRTOOLS_IMAGES_V1_1, the only version criu 4.x accepts.
const ImgVersion = 2

func objIDs(id uint32) *criucore.TaskKobjIdsEntry {
	u := proto.Uint32
	return &criucore.TaskKobjIdsEntry{
		VmId: u(id), FilesId: u(id), FsId: u(id), SighandId: u(id),
		PidNsId: u(rootObjID), NetNsId: u(rootObjID), IpcNsId: u(rootObjID), UtsNsId: u(rootObjID),
		MntNsId: u(rootObjID), UserNsId: u(rootObjID), CgroupNsId: u(rootObjID), TimeNsId: u(rootObjID),
	}
}

// writeImages writes every image of the dump. inventory.img goes last
// but the checksums: its presence marks a complete dump.
func (d *dumper) writeImages() error {
	w := func(name string, m ...proto.Message) error { return d.dir.Write(name, m...) }
	steps := []func() error{
		d.closePageServer,
		d.writePstree,
		func() error {
			d.log.Debug("dump phase", "phase", "process images")
			for _, p := range d.all {
				if err := d.writeProcess(p); err != nil {
					return err
				}
			}
			return nil
		},
		d.dumpShmem,
		func() error { return d.ns.Write(d.dir, func() int { return d.ids.next("pages") }) },
		func() error { return d.cg.Write(d.dir) },
		func() error { return d.files.WriteImages(d.dir) },
		func() error { return w("seccomp.img", d.seccomp.Entry()) },
		func() error { return cpuinfo.DumpFor(d.dir, d.opts.CPUCap) },
		func() error {
			var mono, boot unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
			_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
			return w("timens-0.img", &timens.TimensEntry{
				Monotonic: &timens.Timespec{TvSec: proto.Uint64(uint64(mono.Sec)), TvNsec: proto.Uint64(uint64(mono.Nsec))},
				Boottime:  &timens.Timespec{TvSec: proto.Uint64(uint64(boot.Sec)), TvNsec: proto.Uint64(uint64(boot.Nsec))},
			})
		},
		func() error {
			d.stats.End = time.Now()
			var err error
			d.workDir, err = stats.WriteDump(d.dir, d.opts.WorkDir, d.stats)
			return err
		},
		// The test hook just before inventory.img, which marks a
		// complete dump.
		func() error { interrupt.At(d.ctx, "dump-inventory"); return nil },
		func() error { return w("inventory.img", d.inventory()) },
		func() error {
			d.log.Debug("dump phase", "phase", "checksums")
			d.dir.Track(checksum.FileName, checksum.FileName+".tmp")
			known := d.dir.Sums() // the images' own, taken as they were written
			maps.Copy(known, d.sums)
			return checksum.Write(d.dir.Path, known)
		},
	}
	if err := d.runSteps(steps); err != nil {
		return fmt.Errorf("write images to %s: %w", d.dir.Path, err)
	}
	return nil
}

// runSteps runs the steps of writing images in order, looking at the
// context (an interrupt) before each.
func (d *dumper) runSteps(steps []func() error) error {
	for _, s := range steps {
		if err := interrupt.Check(d.ctx, "dump phase images"); err != nil {
			return err
		}
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// writePstree lists every process, parents first, with its threads.
func (d *dumper) writePstree() error {
	ents := make([]proto.Message, 0, len(d.all))
	for _, p := range d.all {
		ppid := 0
		if p.parent != nil {
			ppid = p.parent.pid
		}
		tids := make([]int, 0, len(p.threads))
		for _, th := range p.threads {
			tids = append(tids, th.tid)
		}
		e := pstree.Entry(p.pid, ppid, p.stat.Pgrp, p.stat.Session, tids, p.zombie)
		if err := d.ns.Pstree(e); err != nil {
			return err
		}
		ents = append(ents, e)
	}
	return d.dir.Write("pstree.img", ents...)
}

// writeProcess writes the per-process and per-thread images of p.
func (d *dumper) writeProcess(p *process) error {
	w := func(name string, m ...proto.Message) error { return d.dir.Write(name, m...) }
	if p.zombie {
		return w(fmt.Sprintf("core-%d.img", d.ns.ImagePid(p.pid)), &criucore.CoreEntry{
			Mtype: criucore.CoreEntry_X86_64.Enum(),
			Tc: &criucore.TaskCoreEntry{
				TaskState:   proto.Uint32(core.TaskDead),
				ExitCode:    proto.Uint32(uint32(p.exitCode)),
				Personality: proto.Uint32(0),
				Flags:       proto.Uint32(0),
				BlkSigset:   proto.Uint64(0),
				Comm:        proto.String(p.stat.Comm),
			},
		})
	}
	cores := make([]images.Single, len(p.threads))
	for i, th := range p.threads {
		c := th.core
		if th.tid == p.pid {
			c.Tc = p.tc
		}
		cores[i] = images.Single{Name: fmt.Sprintf("core-%d.img", d.ns.ThreadPid(p.pid, th.tid)), Msg: c}
	}
	if err := d.dir.WriteParallel(cores); err != nil {
		return err
	}
	fds := make([]proto.Message, len(p.fds))
	for i, e := range p.fds {
		fds[i] = e
	}
	steps := []func() error{
		func() error { return w(fmt.Sprintf("ids-%d.img", d.ns.ImagePid(p.pid)), p.ids) },
		func() error { return w(fmt.Sprintf("mm-%d.img", d.ns.ImagePid(p.pid)), p.mm) },
		func() error {
			return w(fmt.Sprintf("fs-%d.img", d.ns.ImagePid(p.pid)), &fs.FsEntry{
				CwdId: proto.Uint32(p.cwdID), RootId: proto.Uint32(p.rootID), Umask: proto.Uint32(p.status.Umask),
			})
		},
		func() error {
			if p.sharesFiles {
				return nil // the parent's fdinfo image
			}
			return w(fmt.Sprintf("fdinfo-%d.img", p.ids.GetFilesId()), fds...)
		},
	}
	return d.runSteps(steps)
}

func (d *dumper) inventory() *inventory.InventoryEntry {
	rootIDs := objIDs(rootObjID)
	d.ns.RootIDs(rootIDs)
	inv := &inventory.InventoryEntry{
		ImgVersion:        proto.Uint32(ImgVersion),
		FdinfoPerId:       proto.Bool(true),
		NsPerId:           proto.Bool(true),
		RootIds:           rootIDs,
		RootCgSet:         proto.Uint32(1),
		Lsmtype:           hostLSM().Enum(),
		PluginsEntry:      &inventory.PluginsEntry{},
		DumpCriuRunId:     proto.String(d.runID),
		NetworkLockMethod: proto.Uint32(netlock.InventoryMethod(d.opts.NetworkLock)),
		TcpClose:          proto.Bool(d.opts.Files.TCPClose),
	}
	d.iterInventory(inv)
	return inv
}

func hostLSM() inventory.Lsmtype {
	if _, err := os.Stat("/sys/kernel/security/apparmor"); err == nil {
		return inventory.Lsmtype_APPARMOR
	}
	if _, err := os.Stat("/sys/fs/selinux/enforce"); err == nil {
		return inventory.Lsmtype_SELINUX
	}
	return inventory.Lsmtype_NO_LSM
}
