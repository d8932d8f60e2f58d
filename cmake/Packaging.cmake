# What `cmake --install` puts beside the SDK (top-level CMakeLists.txt), and the Debian packages
# `cpack` (or `cmake --build build --target package`) builds from it (docs/install.md).
# Install components, one Debian package each:
#   engine    fleetflow: the program (apps/), the JSON schemas, the shipped pipelines and their
#             tests, its man pages, fleetflow@.service, docs/install.md and an example .env
#   firmware  fleet-sensor: fleet-sensor, fleetctl, fleet-sim (firmware/), their man pages and
#             fleet-sensor.service; only the firmware's libraries (nats.c, OpenSSL)
#   dev       fleetflow-dev: the operator SDK (static libraries, headers, CMake package)
# A firmware-only build (-DFLEETFLOW_FIRMWARE_ONLY=ON) installs and packages the firmware only.
# Nothing is installed into /etc: the administrator's files there are never overwritten; the
# examples go to share/doc.

# systemd's unit directory, relative to the install prefix (so `cmake --install --prefix P` as a
# user works): pkg-config's systemdsystemunitdir with its prefixes emptied, else
# lib/systemd/system. Under the packages' prefix /usr that is /usr/lib/systemd/system, which
# systemd reads (and which is /lib/systemd/system on Debian 12's merged /usr).
set(ff_unitdir lib/systemd/system)
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  execute_process(
    COMMAND ${PKG_CONFIG_EXECUTABLE} --define-variable=prefix= --define-variable=rootprefix=
            --define-variable=root_prefix= --variable=systemdsystemunitdir systemd
    OUTPUT_VARIABLE ff_pc_unitdir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
    RESULT_VARIABLE ff_pc_rc)
  if(ff_pc_rc EQUAL 0 AND ff_pc_unitdir MATCHES "^/?(.+)$")
    set(ff_unitdir ${CMAKE_MATCH_1})
  endif()
endif()
set(FLEETFLOW_SYSTEMD_UNITDIR ${ff_unitdir} CACHE STRING
  "Where the systemd units go (relative: to the install prefix)")

# ff_install_unit(<unit> <component>): deploy/systemd/<unit>.in with the programs' directory
# (@FF_BINDIR@) and the data and doc directories filled in at install time, from the prefix of
# that install: /usr for the packages (cpack installs into /usr under a staging DESTDIR),
# whatever --prefix says for `cmake --install`, so the units always name the installed programs.
function(ff_install_unit unit component)
  set(in ${PROJECT_SOURCE_DIR}/deploy/systemd/${unit}.in)
  set(out ${PROJECT_BINARY_DIR}/systemd/${component}/${unit})
  set(dir ${FLEETFLOW_SYSTEMD_UNITDIR})
  if(NOT IS_ABSOLUTE "${dir}")
    set(dir "\${CMAKE_INSTALL_PREFIX}/${dir}")
  endif()
  install(CODE "
    set(FF_BINDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
    set(FF_DATADIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATADIR}\")
    set(FF_DOCDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATAROOTDIR}/doc\")
    configure_file(\"${in}\" \"${out}\" @ONLY)
    file(INSTALL DESTINATION \"${dir}\" TYPE FILE FILES \"${out}\")"
    COMPONENT ${component})
endfunction()

set(ff_man_dir ${PROJECT_SOURCE_DIR}/man)
set(ff_doc_engine ${CMAKE_INSTALL_DATAROOTDIR}/doc/fleetflow)
set(ff_doc_firmware ${CMAKE_INSTALL_DATAROOTDIR}/doc/fleet-sensor)

# --- firmware ------------------------------------------------------------------------------
# (The programs: firmware/CMakeLists.txt.)
install(FILES ${ff_man_dir}/fleet-sensor.1 ${ff_man_dir}/fleetctl.1 ${ff_man_dir}/fleet-sim.1
  DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT firmware)
ff_install_unit(fleet-sensor.service firmware)
install(FILES deploy/systemd/fleet-sensor.env.example docs/firmware.md
  DESTINATION ${ff_doc_firmware} COMPONENT firmware)
set(ff_components firmware)

# --- engine --------------------------------------------------------------------------------
if(NOT FLEETFLOW_FIRMWARE_ONLY)
  # (The program: apps/CMakeLists.txt.) Globbed at configure time: a new schema, pipeline or
  # subcommand page is picked up by the next configure.
  file(GLOB ff_schemas CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/schemas/*.json)
  file(GLOB ff_pipelines CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/pipelines/*.json)
  file(GLOB ff_engine_man CONFIGURE_DEPENDS ${ff_man_dir}/fleetflow.1 ${ff_man_dir}/fleetflow-*.1)
  install(FILES ${ff_schemas} DESTINATION ${CMAKE_INSTALL_DATADIR}/fleetflow/schemas
    COMPONENT engine)
  install(FILES ${ff_pipelines} DESTINATION ${CMAKE_INSTALL_DATADIR}/fleetflow/pipelines
    COMPONENT engine)
  install(FILES ${ff_engine_man} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT engine)
  ff_install_unit(fleetflow@.service engine)
  install(FILES deploy/systemd/fleetflow.env.example docs/install.md docs/cli.md docs/deploy.md
    DESTINATION ${ff_doc_engine} COMPONENT engine)
  list(APPEND ff_components engine dev)
endif()

# --- Debian packages -----------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fleetflow)
set(CPACK_PACKAGE_VENDOR fleetflow)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "fleetflow maintainers <fleetflow@example.org>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_COMPONENTS_ALL ${ff_components})
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # <name>_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
# Depends: from the libraries the programs link (dpkg-shlibdeps, Debian package dpkg-dev), so
# fleet-sensor depends on what the firmware links and nothing of the engine's.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Programs without their debug information: a tenth of the size.
set(CPACK_STRIP_FILES ON)
# Maintainer scripts with the modes dpkg expects (0755), whatever the checkout's are.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(ff_scripts ${PROJECT_SOURCE_DIR}/cmake/debian/postinst ${PROJECT_SOURCE_DIR}/cmake/debian/postrm)

set(CPACK_DEBIAN_ENGINE_PACKAGE_NAME fleetflow)
set(CPACK_DEBIAN_ENGINE_PACKAGE_SECTION net)
set(CPACK_DEBIAN_ENGINE_PACKAGE_SUGGESTS "nats-server, postgresql")
set(CPACK_DEBIAN_ENGINE_PACKAGE_CONTROL_EXTRA ${ff_scripts})
set(CPACK_COMPONENT_ENGINE_DESCRIPTION
 "vehicle-fleet telemetry engine: NATS to PostgreSQL/TimescaleDB
fleetflow runs stream-processing pipelines (JSON files) that turn vehicle telemetry from NATS
into one time-aligned row per vehicle per window in PostgreSQL or TimescaleDB, with alarms,
statistics tiers and an archive. The package has the fleetflow program, the pipeline and
alarm JSON schemas, the shipped pipelines (/usr/share/fleetflow/pipelines), man pages and the
systemd unit fleetflow@.service (not enabled: see /usr/share/doc/fleetflow/install.md).")

set(CPACK_DEBIAN_FIRMWARE_PACKAGE_NAME fleet-sensor)
set(CPACK_DEBIAN_FIRMWARE_PACKAGE_SECTION net)
set(CPACK_DEBIAN_FIRMWARE_PACKAGE_CONTROL_EXTRA ${ff_scripts})
set(CPACK_COMPONENT_FIRMWARE_DESCRIPTION
 "fleetflow's vehicle side: fleet-sensor, fleetctl, fleet-sim
fleet-sensor samples a vehicle's sensors and publishes them over NATS, buffering while the link
is down; fleetctl sends it commands; fleet-sim simulates a fleet. With the systemd unit
fleet-sensor.service (not enabled). Only nats.c and OpenSSL, none of the engine's libraries.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME fleetflow-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# What cmake/fleetflowConfig.cmake finds (find_dependency, pkg-config).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libtbb-dev, rapidjson-dev, libspdlog-dev, prometheus-cpp-dev, libmuparser-dev, libabsl-dev, libnats-dev, libpqxx-dev, libpq-dev, libcpp-httplib-dev, libzstd-dev, libflatbuffers-dev, libssl-dev, pkg-config")
set(CPACK_COMPONENT_DEV_DESCRIPTION
 "fleetflow operator SDK: static libraries, headers, CMake package
For operators written outside fleetflow's tree: find_package(fleetflow) gives
fleetflow::ff_engine, fleetflow::ff_operators and the test kit fleetflow::testkit.")

include(CPack)
