# Stand-in for Slicer's SlicerConfigVersion.cmake: find_package(Slicer) takes Slicer_VERSION from
# here. The version is FAKE_SLICER_VERSION (default 5.10.0, the oldest supported release), so a
# test can configure against an older Slicer with -DFAKE_SLICER_VERSION=5.8.1.
if(NOT DEFINED FAKE_SLICER_VERSION)
  set(FAKE_SLICER_VERSION "5.10.0")
endif()
set(PACKAGE_VERSION "${FAKE_SLICER_VERSION}")
if("${PACKAGE_VERSION}" VERSION_LESS "${PACKAGE_FIND_VERSION}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if("${PACKAGE_VERSION}" VERSION_EQUAL "${PACKAGE_FIND_VERSION}")
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
