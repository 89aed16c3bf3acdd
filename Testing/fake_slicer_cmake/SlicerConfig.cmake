# A stand-in for Slicer's build tree used only by Testing/test_module_cmake.py: it provides the
# macros the extension's CMakeLists.txt call, with the argument parsing and the configure-time
# checks of Slicer's own macros (CMake/SlicerMacroBuildScriptedModule.cmake,
# CMake/SlicerMacroPythonTesting.cmake, CTK's CMake/ctkMacroCompilePythonScript.cmake), and
# records what they receive in ${CMAKE_BINARY_DIR}/slicer-macros.txt. Building against real Slicer
# is Slicer's CI job; this checks the extension's file lists, arguments and version requirement.
if(NOT DEFINED FAKE_SLICER_VERSION)
  set(FAKE_SLICER_VERSION "5.10.0")
endif()
string(REPLACE "." ";" _fake_slicer_version_parts "${FAKE_SLICER_VERSION}")
list(GET _fake_slicer_version_parts 0 _fake_slicer_major)
list(GET _fake_slicer_version_parts 1 _fake_slicer_minor)
set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_USE_PYTHONQT ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-${_fake_slicer_major}.${_fake_slicer_minor}/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
if("${FAKE_SLICER_VERSION}" VERSION_LESS "5.10")
  set(Slicer_REQUIRED_PYTHON_VERSION "3.9.10")
else()
  set(Slicer_REQUIRED_PYTHON_VERSION "3.12.10")
endif()
set(BUILD_TESTING ON)
