# A stand-in for Slicer's build tree used only by Testing/test_module_cmake.py: it provides the
# macros the extension's CMakeLists.txt call and records what they receive in
# ${CMAKE_BINARY_DIR}/slicer-macros.txt, failing the configure step for any file that does not
# exist. It checks the extension's file lists; building against real Slicer is Slicer's CI job.
set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.13/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(BUILD_TESTING ON)
